#include "core/ledger/ledger_budget_factory.h"

#include <fcntl.h>
#include <fmt/core.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cmath>

#include "core/budget/local_budget.h"
#include "core/common/format_bytes.h"
#include "core/ledger/ledger_budget.h"
#include "core/ledger/ledger_name.h"
#include "core/ledger/ledger_snapshot.h"
#include "core/ledger/ledger_validate.h"
#include "core/log/log.h"

namespace kvcached::ledger {
namespace {

std::string DefaultLabel() {
  std::array<char, 64> buf{};
  const int fd = ::open("/proc/self/comm", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    const ssize_t n = ::read(fd, buf.data(), buf.size() - 1);
    ::close(fd);
    if (n > 0) buf[n] = '\0';
    if (n > 0 && buf[n - 1] == '\n') buf[n - 1] = '\0';
  }
  return buf[0] != '\0' ? std::string(buf.data())
                        : std::string("pid-") + std::to_string(::getpid());
}

Result<std::shared_ptr<Segment>> OpenNamed(const std::string& name, const CreateParams& params) {
  bool created = false;
  auto seg = Segment::OpenOrCreate(name, params, &created);
  if (!seg.ok()) return seg.status();
  if (created) {
    KVC_LOG_INFO("kvcached: created ledger {} (GPU {}, budget {} of {} bytes)", SegmentPath(name),
                 params.gpu_uuid, params.budget, params.gpu_total);
  }
  return std::shared_ptr<Segment>(std::move(seg).value());
}

}  // namespace

Result<std::uint64_t> BudgetBytesFor(const Config& config, std::uint64_t total_bytes) {
  if (total_bytes == 0) {
    return Status(Errc::kInvalid, "the device reports 0 bytes of memory: no budget possible");
  }
  std::uint64_t budget = 0;
  if (config.budget_bytes) {
    budget = std::min(*config.budget_bytes, total_bytes);
  } else {
    budget = static_cast<std::uint64_t>(
        std::floor(config.gpu_utilization * static_cast<double>(total_bytes)));
    budget = std::min(budget, total_bytes);
  }
  if (budget == 0) {
    return Status(Errc::kInvalid,
                  "KVCACHED_BUDGET / KVCACHED_GPU_UTILIZATION give a budget of 0 "
                  "bytes: set a positive budget");
  }
  return budget;
}

Result<std::shared_ptr<Segment>> OpenSegmentFor(const Config& config,
                                                const DeviceIdentity& device) {
  auto budget = BudgetBytesFor(config, device.total_bytes);
  if (!budget.ok()) return budget.status();
  CreateParams params;
  params.gpu_total = device.total_bytes;
  params.budget = budget.value();
  params.gpu_uuid = device.uuid;
  params.mode = config.shm_mode;
  params.group = config.shm_group;

  const std::string name = DefaultSegmentName(config, device);
  auto seg = OpenNamed(name, params);
  if (!seg.ok()) return seg.status();
  std::shared_ptr<Segment> segment = std::move(seg).value();
  if (!device.uuid.empty() && segment->gpu_uuid() != device.uuid) {
    if (config.ipc_name.empty()) {
      return Status(
          Errc::kInvalid,
          fmt::format("ledger segment {} describes GPU '{}', not this process's GPU {} "
                      "(device {}). Fix: `kvctl delete {}`",
                      segment->path(), segment->gpu_uuid(), device.uuid, device.ordinal, name));
    }
    // One KVCACHED_IPC_NAME used on several GPUs (tensor parallelism): each GPU needs its own
    // budget, so the other GPUs get "<name>_<GPU uuid prefix>".
    const std::string per_gpu =
        fmt::format("{}_{}", name, SanitizeIpcName(device.uuid.substr(0, 12)));
    KVC_LOG_INFO("kvcached: {} belongs to GPU {}; device {} ({}) uses {}", segment->path(),
                 segment->gpu_uuid(), device.ordinal, device.uuid, SegmentPath(per_gpu));
    auto other = OpenNamed(per_gpu, params);
    if (!other.ok()) return other.status();
    segment = std::move(other).value();
    if (segment->gpu_uuid() != device.uuid) {
      return Status(
          Errc::kInvalid,
          fmt::format("ledger segment {} describes GPU '{}', not {}. Fix: "
                      "`kvctl delete {}`",
                      segment->path(), segment->gpu_uuid(), device.uuid, segment->name()));
    }
  }
  if (segment->gpu_total() != device.total_bytes) {
    KVC_LOG_WARN(
        "kvcached: {} records {} bytes of GPU memory, the driver reports {}; using the "
        "segment's budget of {} bytes",
        segment->path(), segment->gpu_total(), device.total_bytes, segment->budget());
  } else if (segment->budget() != params.budget) {
    KVC_LOG_INFO(
        "kvcached: {} already has a budget of {} bytes (set by its creator); this "
        "process's KVCACHED_BUDGET/KVCACHED_GPU_UTILIZATION ({} bytes) is not applied",
        segment->path(), segment->budget(), params.budget);
  }
  return segment;
}

std::string DefaultSegmentName(const Config& config, const DeviceIdentity& device) {
  const bool shared = !config.ipc_name.empty() || !config.shm_group.empty();
  return SegmentNameFor(config.ipc_name, device.uuid, device.ordinal,
                        shared ? std::nullopt : std::optional<unsigned>(::geteuid()));
}

Status DiagnoseSegment(const std::string& name, const std::string& trusted_group) {
  struct stat st {};
  if (::lstat(SegmentPath(name).c_str(), &st) != 0 && errno == ENOENT) return Status::Ok();
  auto seg = Segment::Open(name, Segment::Access::kReadWrite, trusted_group);
  if (!seg.ok()) return seg.status();
  if (auto problem = seg.value()->Health()) {
    return {Errc::kInvalid, SegmentProblem(seg.value()->path(), *problem)};
  }
  const SegmentSnapshot snap = TakeSnapshot(*seg.value());
  if (snap.live >= snap.slot_count) {
    return {Errc::kNoMemory,
            fmt::format("all {} slots of {} are held by live processes: another engine "
                        "would run with a process-local budget (see `kvctl watch {}`)",
                        snap.slot_count, seg.value()->path(), name)};
  }
  return Status::Ok();
}

BudgetFactory MakeBudgetFactory() {
  return [](const Config& config, const DeviceIdentity& device) -> Result<std::unique_ptr<Budget>> {
    // A configuration that allows no budget is the operator's error to fix, not a segment's.
    auto bytes = BudgetBytesFor(config, device.total_bytes);
    if (!bytes.ok()) return bytes.status();
    const std::string label = config.label.empty() ? DefaultLabel() : config.label;
    Status why;
    for (int attempt = 0; attempt < 3; ++attempt) {
      auto segment = OpenSegmentFor(config, device);
      if (!segment.ok()) {
        why = segment.status();
        break;
      }
      auto budget = LedgerBudget::Attach(std::move(segment).value(), label);
      if (budget.ok()) {
        budget.value()->ConfigureShare(config.share_weight_milli, config.share_min_bytes,
                                       config.page_size(),
                                       std::uint64_t{config.share_preempt_ms} * 1000 * 1000);
        KVC_LOG_INFO("kvcached: device {} draws from ledger {} (budget {} bytes, slot {})",
                     device.ordinal, budget.value()->segment().path(),
                     budget.value()->segment().budget(), budget.value()->slot_index());
        return std::unique_ptr<Budget>(std::move(budget).value());
      }
      why = budget.status();
      if (why.code() != Errc::kNotFound) break;  // deleted while attaching: open the name again
    }
    // Never "no KV cache": the engine keeps working on its own budget, and says why once.
    log::ErrorOnce(
        fmt::format("ledger-fallback-{}", device.ordinal),
        fmt::format("kvcached: GPU {} ({}) runs with a process-local budget of {}: the shared "
                    "ledger cannot be used: {}. Its KV cache works, but is not shared "
                    "elastically with other engines on this GPU until this is fixed (`kvctl "
                    "doctor` shows it)",
                    device.ordinal, device.uuid, FormatBytes(bytes.value()), why.message()));
    return std::unique_ptr<Budget>(std::make_unique<LocalBudget>(bytes.value()));
  };
}

}  // namespace kvcached::ledger
