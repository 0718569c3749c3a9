// Device-side helpers of the GPU tests, behind a plain C++ interface so that the tests
// themselves are ordinary C++ (compiled by the host compiler) and only this part needs nvcc.
// Addresses are device virtual addresses as the core returns them.
// Two implementations: gpu_kernels.cu (CUDA kernels, the real GPU) and gpu_kernels_host.cpp
// (plain loops over the fake driver's host-memory "device" pointers), so that the same test
// sources also run here on the fake driver and their logic is checked without a GPU.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "core/common/status.h"

namespace kvcached::gputest {

// Empty when a CUDA GPU with virtual memory management can be used here; otherwise the reason
// (the tests skip with it): no libcuda.so.1, no device, no VMM support.
std::string UnavailableReason();

// Default number of random acquire/release/trim cycles of the churn test (KVCACHED_GPU_TEST_CYCLES
// overrides it): fewer on the fake driver, whose "kernels" are loops on the CPU.
extern const std::uint64_t kDefaultChurnCycles;

// The driver library the core must load to share memory with these helpers.
std::string DriverPath();

// Makes `device` current for the runtime API and creates its primary context, which the core's
// driver calls then share.
Status UseDevice(int device);

// Writes a pattern derived from each 32-bit word's absolute address and `seed` into
// [addr, addr + bytes) with a kernel, then synchronizes (a fault shows up here). bytes % 4 == 0.
Status Fill(std::uint64_t addr, std::uint64_t bytes, std::uint32_t seed);
// Number of 32-bit words in the range that differ from what Fill(addr, bytes, seed) wrote.
Result<std::uint64_t> Mismatches(std::uint64_t addr, std::uint64_t bytes, std::uint32_t seed);
// Number of non-zero 32-bit words in the range.
Result<std::uint64_t> NonZeroWords(std::uint64_t addr, std::uint64_t bytes);
// Position-weighted checksum of the words, independent of the range's address: two ranges with
// the same bytes have the same checksum.
Result<std::uint64_t> Checksum(std::uint64_t addr, std::uint64_t bytes);
// cudaMemGetInfo: (free, total) bytes of the current device.
Result<std::pair<std::uint64_t, std::uint64_t>> MemInfo();

}  // namespace kvcached::gputest
