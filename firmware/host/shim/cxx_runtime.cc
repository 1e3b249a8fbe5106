/*
 * The few C++ runtime symbols TFLM and sent_host.cc need, for builds linked without the C++
 * library (the riscv32 build: zig would otherwise compile libc++ and libc++abi on first use).
 * TFLM never allocates with new (it places objects in the arena), has pure virtual methods and
 * virtual destructors; ESP-IDF's own runtime provides the same symbols on the board.
 */
#include <cstdlib>
#include <new>

extern "C" void __cxa_pure_virtual() { std::abort(); }

void *operator new(std::size_t size)
{
    void *p = std::malloc(size ? size : 1);
    if (p == nullptr) std::abort();
    return p;
}

void operator delete(void *p) noexcept { std::free(p); }
void operator delete(void *p, std::size_t) noexcept { std::free(p); }
