"""pipeline.parallel: the calls' results, in order, from worker processes."""

from __future__ import annotations

import os

from pipeline.parallel import run_parallel


def _where(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def test_run_parallel_keeps_order_and_uses_workers(monkeypatch) -> None:
    import pipeline.parallel as par

    done = []
    out = run_parallel(_where, [(k,) for k in range(5)], on_done=lambda: done.append(1))
    assert [v for v, _ in out] == [0, 1, 4, 9, 16] and len(done) == 5
    assert out[0][1] == os.getpid()  # the first call runs here
    if par.cores() > 1:
        assert {pid for _, pid in out[1:]} - {os.getpid()}  # the rest in workers
    monkeypatch.setattr(par, "cores", lambda: 1)
    assert run_parallel(_where, [(2,), (3,)]) == [(4, os.getpid()), (9, os.getpid())]


def test_side_worker_is_one_process_reused(monkeypatch) -> None:
    import pipeline.parallel as par

    with par.side_worker() as pool:
        if par.cores() > 1:
            pids = {pool.submit(_where, k).result()[1] for k in range(4)}
            assert len(pids) == 1 and os.getpid() not in pids  # spawned once, used four times
            assert pool.submit(_where, 7).result()[0] == 49
        else:
            assert pool is None
    monkeypatch.setattr(par, "cores", lambda: 1)
    with par.side_worker() as pool:
        assert pool is None
