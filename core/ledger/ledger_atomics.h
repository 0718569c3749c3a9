// Access to the words of a mapped segment. Every word another process may touch concurrently is
// accessed through a lock-free std::atomic_ref (never a lock: its holder could be SIGKILLed).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace kvcached::ledger {

inline std::atomic_ref<std::uint64_t> Atomic(std::uint64_t& word) {
  return std::atomic_ref<std::uint64_t>(word);
}

// Loads that also work on read-only mappings (kvctl maps segments read-only): std::atomic_ref
// <const T> does not exist in C++20, and these builtins are the same lock-free loads.
inline std::uint64_t Load(const std::uint64_t& word) {
  return __atomic_load_n(&word, __ATOMIC_SEQ_CST);
}
inline std::uint64_t LoadAcquire(const std::uint64_t& word) {
  return __atomic_load_n(&word, __ATOMIC_ACQUIRE);
}
inline std::uint64_t LoadRelaxed(const std::uint64_t& word) {
  return __atomic_load_n(&word, __ATOMIC_RELAXED);
}

// Copies `bytes` (a multiple of 8, 8-aligned) word by word with relaxed atomic loads: a
// tear-free-per-word snapshot of a live segment that the pure validator and kvctl can parse.
inline void CopyWords(void* dst, const void* src, std::size_t bytes) {
  auto* d = static_cast<std::uint64_t*>(dst);
  const auto* s = static_cast<const std::uint64_t*>(src);
  for (std::size_t i = 0; i < bytes / 8; ++i) d[i] = __atomic_load_n(&s[i], __ATOMIC_RELAXED);
}

// a + b without wrapping (a hostile segment may hold huge numbers).
inline std::uint64_t SatAdd(std::uint64_t a, std::uint64_t b) {
  std::uint64_t r = 0;
  return __builtin_add_overflow(a, b, &r) ? ~std::uint64_t{0} : r;
}

}  // namespace kvcached::ledger
