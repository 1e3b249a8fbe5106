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
