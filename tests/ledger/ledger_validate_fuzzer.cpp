// libFuzzer entry point for the segment validator (built only with -DKVCACHED_LIBFUZZER=ON and
// clang): clang++ -fsanitize=fuzzer,address. The validator must accept or refuse every input
// with a message, never crash or read out of bounds.
#include <cstddef>
#include <cstdint>
#include <span>

#include "core/ledger/ledger_validate.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto r = kvcached::ledger::ValidateSegment(
      std::span<const std::byte>(reinterpret_cast<const std::byte*>(data), size),
      "/dev/shm/kvcached_fuzz");
  if (!r.ok() && r.status().message().empty()) __builtin_trap();
  return 0;
}
