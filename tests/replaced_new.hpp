// Replaces every form of the global operator new and delete with malloc/aligned_alloc and free,
// asking the including test first: `test_allocation_allowed(n)` is called for every allocation
// (to count or watch it) and refuses it by returning false (std::bad_alloc, or nullptr for the
// nothrow forms).
//
// The replacement is program-wide, so include this header in exactly ONE source file of an
// executable, which defines test_allocation_allowed (thread-safe: any thread allocates). Every
// form is replaced, so that each block is freed by the allocator that made it (the sanitizers
// and the standard library would otherwise pair some with their own); noinline keeps GCC from
// seeing free() next to a new-expression (-Wmismatched-new-delete).
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>

bool test_allocation_allowed(std::size_t n);

namespace pasyn_test_new {
inline void* allocate(std::size_t n) {
  return test_allocation_allowed(n) ? std::malloc(n == 0 ? 1 : n) : nullptr;
}
inline void* allocate(std::size_t n, std::align_val_t align) {
  if (!test_allocation_allowed(n)) return nullptr;
  const auto a = static_cast<std::size_t>(align);
  return std::aligned_alloc(a, (n + a - 1) / a * a);
}
}  // namespace pasyn_test_new

[[gnu::noinline]] void* operator new(std::size_t n) {
  if (void* p = pasyn_test_new::allocate(n)) return p;
  throw std::bad_alloc();
}
[[gnu::noinline]] void* operator new[](std::size_t n) {
  if (void* p = pasyn_test_new::allocate(n)) return p;
  throw std::bad_alloc();
}
[[gnu::noinline]] void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  return pasyn_test_new::allocate(n);
}
[[gnu::noinline]] void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  return pasyn_test_new::allocate(n);
}
[[gnu::noinline]] void* operator new(std::size_t n, std::align_val_t a) {
  if (void* p = pasyn_test_new::allocate(n, a)) return p;
  throw std::bad_alloc();
}
[[gnu::noinline]] void* operator new[](std::size_t n, std::align_val_t a) {
  if (void* p = pasyn_test_new::allocate(n, a)) return p;
  throw std::bad_alloc();
}
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}
[[gnu::noinline]] void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}
