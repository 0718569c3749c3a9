// Segment: one mapped ledger (/dev/shm/kvcached_*), created or opened through
// Boost.Interprocess and validated on every open. The geometry (slot count, budget, GPU total)
// is read once from a validated copy and never re-read, so that a later scribble on the shared
// bytes cannot make this process index out of bounds.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/common/status.h"
#include "core/ledger/ledger_layout.h"

namespace kvcached::ledger {

struct CreateParams {
  std::uint64_t gpu_total = 0;
  std::uint64_t budget = 0;
  std::string gpu_uuid;
  std::uint32_t slot_count = kDefaultSlotCount;
  std::uint32_t mode = 0600;  // applied with fchmod, so the umask cannot widen or narrow it
  std::string group;          // when set, the segment's group (fchown)
};

class Segment {
 public:
  enum class Access { kReadOnly, kReadWrite };
  struct Mapping;  // the Boost.Interprocess objects (ledger_segment.cpp)

  // Opens `name`, creating it from `params` when it does not exist. `created` tells which.
  static Result<std::unique_ptr<Segment>> OpenOrCreate(const std::string& name,
                                                       const CreateParams& params,
                                                       bool* created = nullptr);
  // Opens an existing segment; waits (bounded, 1 s) for a creator that is still initialising it.
  static Result<std::unique_ptr<Segment>> Open(const std::string& name, Access access);
  // Unlinks /dev/shm/<name> (processes that have it mapped keep their mapping).
  static Status Remove(const std::string& name);

  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;
  Segment(Segment&&) = delete;
  Segment& operator=(Segment&&) = delete;
  ~Segment();

  [[nodiscard]] const std::string& name() const { return name_; }
  [[nodiscard]] std::string path() const;
  [[nodiscard]] std::uint32_t slot_count() const { return slot_count_; }
  [[nodiscard]] std::uint64_t budget() const { return budget_; }
  [[nodiscard]] std::uint64_t gpu_total() const { return gpu_total_; }
  [[nodiscard]] const std::string& gpu_uuid() const { return gpu_uuid_; }
  [[nodiscard]] bool writable() const { return writable_; }

  // Live words (use the accessors of ledger_atomics.h). Writable only when opened read-write.
  SegmentHeader& header();
  LedgerSlot& slot(std::uint32_t index);
  [[nodiscard]] const SegmentHeader& header() const;
  [[nodiscard]] const LedgerSlot& slot(std::uint32_t index) const;

  // A word-by-word copy of the header and the slots (for display and validation).
  [[nodiscard]] std::vector<std::byte> Copy() const;

 private:
  Segment(std::string name, std::unique_ptr<Mapping> mapping, bool writable);
  Status Adopt();  // validates and reads the geometry

  std::string name_;
  std::unique_ptr<Mapping> mapping_;
  bool writable_ = false;
  std::uint32_t slot_count_ = 0;
  std::uint64_t budget_ = 0;
  std::uint64_t gpu_total_ = 0;
  std::string gpu_uuid_;
};

// Why opening `path` failed with errno `err`, with the fix (permission denied names the owner and
// KVCACHED_SHM_GROUP / KVCACHED_SHM_MODE).
std::string OpenErrorMessage(const std::string& path, int err);

}  // namespace kvcached::ledger
