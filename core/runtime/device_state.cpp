#include "core/runtime/device_state.h"

#include <fmt/format.h>

#include "core/budget/local_budget.h"
#include "core/common/format_bytes.h"
#include "core/config/device_budget.h"
#include "core/driver/handles.h"
#include "core/log/log.h"

namespace kvcached {

std::string FormatGpuUuid(const CUuuid& uuid) {
  std::string out = "GPU-";
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
    out += fmt::format("{:02x}", static_cast<unsigned char>(uuid.bytes[i]));
  }
  return out;
}

Result<std::unique_ptr<Budget>> DefaultBudget(const Config& config, const DeviceIdentity& id) {
  std::uint64_t limit = config.budget_bytes.value_or(
      static_cast<std::uint64_t>(config.gpu_utilization * static_cast<double>(id.total_bytes)));
  return std::unique_ptr<Budget>(std::make_unique<LocalBudget>(limit));
}

Result<std::unique_ptr<DeviceState>> DeviceState::Create(const driver::Driver& driver,
                                                         const Config& config, int ordinal,
                                                         const BudgetFactory& factory,
                                                         const std::string& label) {
  const driver::Api& api = driver.api();
  int count = 0;
  KVC_RETURN_IF_ERROR(driver.Check(api.cuDeviceGetCount(&count), "cuDeviceGetCount"));
  if (ordinal < 0 || ordinal >= count) {
    return Status(Errc::kInvalid, fmt::format("GPU {} does not exist ({} CUDA device{} visible)",
                                              ordinal, count, count == 1 ? " is" : "s are"));
  }
  auto state = std::make_unique<DeviceState>();
  state->identity.ordinal = ordinal;
  KVC_RETURN_IF_ERROR(driver.Check(api.cuDeviceGet(&state->device, ordinal), "cuDeviceGet"));
  int vmm = 0;
  KVC_RETURN_IF_ERROR(driver.Check(
      api.cuDeviceGetAttribute(&vmm, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED,
                               state->device),
      "cuDeviceGetAttribute"));
  if (vmm == 0) {
    return Status(Errc::kUnsupported,
                  fmt::format("GPU {} does not support CUDA virtual memory management, which "
                              "kvcached needs; run without it (ENABLE_KVCACHED=false)",
                              ordinal));
  }
  auto granularity = driver::Granularity(driver, state->device);
  if (!granularity.ok()) return granularity.status();
  if (config.page_size() % granularity.value() != 0) {
    return Status(Errc::kInvalid,
                  fmt::format("KVCACHED_PAGE_SIZE_MB={} is not a multiple of GPU {}'s allocation "
                              "granularity ({}); use a multiple of it",
                              config.page_size_mb, ordinal, FormatBytes(granularity.value())));
  }
  CUuuid uuid{};
  KVC_RETURN_IF_ERROR(driver.Check(api.cuDeviceGetUuid(&uuid, state->device), "cuDeviceGetUuid"));
  state->identity.uuid = FormatGpuUuid(uuid);
  std::size_t total = 0;
  KVC_RETURN_IF_ERROR(
      driver.Check(api.cuDeviceTotalMem(&total, state->device), "cuDeviceTotalMem"));
  state->identity.total_bytes = total;

  auto ctx = driver::PrimaryContext::Retain(driver, state->device);
  if (!ctx.ok()) return ctx.status();
  state->ctx = std::move(ctx).value();

  // The same check `kvctl doctor` makes: a budget the engine cannot work with is refused here
  // with one line, rather than every allocation waiting for pages that never come.
  auto checked = BudgetForDevice(config, state->identity.total_bytes, ordinal);
  if (!checked.ok()) return checked.status();
  if (!checked.value().warning.empty()) KVC_LOG_WARN("{}", checked.value().warning);

  auto budget = factory ? factory(config, state->identity) : DefaultBudget(config, state->identity);
  if (!budget.ok()) return budget.status();
  state->budget = std::move(budget).value();
  if (!state->budget) return Status(Errc::kInvalid, "the budget factory returned no budget");
  if (!label.empty()) state->budget->SetLabel(label);

  state->pool = std::make_unique<PagePool>(driver, config, ordinal, state->device, state->ctx.get(),
                                           *state->budget);
  return state;
}

}  // namespace kvcached
