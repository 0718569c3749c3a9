// kvctl limit TARGET SIZE: sets the per-process limit live (the next admission obeys it).
#include <fmt/core.h>

#include <memory>

#include "core/ledger/ledger_segment.h"
#include "core/ledger/ledger_slots.h"
#include "tools/kvctl/commands.h"
#include "tools/kvctl/format.h"
#include "tools/kvctl/limit_value.h"
#include "tools/kvctl/slot_target.h"

namespace kvctl {
namespace {

namespace ledger = kvcached::ledger;

struct LimitOptions {
  std::string target;
  std::string size;
  std::string segment;
};

int RunLimit(const LimitOptions& o) {
  auto value = ParseLimitValue(o.size);
  if (!value.ok()) {
    PrintError(value.status().message());
    return kExitUsage;
  }
  TargetResolution targets = ResolveTargets(o.target, o.segment, "limit");
  if (targets.exit_code != kExitOk) return targets.exit_code;

  return ApplyToTargets(
      targets, "its limit",
      [&](const SlotMatch& m, ledger::Segment& seg) -> kvcached::Result<std::string> {
        const std::uint64_t wanted = value.value().Resolve(seg.budget());
        auto stored = ledger::SetSlotLimit(seg, m.slot.index, m.slot.owner_word, wanted);
        if (!stored.ok()) return stored.status();
        if (stored.value() == ledger::kNoLimit) {
          return fmt::format("limit removed; the segment budget ({}) applies",
                             FormatBytes(seg.budget()));
        }
        std::string msg = fmt::format("limit set to {}", FormatBytes(stored.value()));
        if (wanted > stored.value()) {
          msg += fmt::format(" (asked {}, clamped to the budget)", FormatBytes(wanted));
        }
        if (m.slot.charged > stored.value()) {
          msg += fmt::format(
              "; it holds {} now and keeps it, but takes no new pages until it is "
              "below the limit",
              FormatBytes(m.slot.charged));
        }
        return msg;
      });
}

}  // namespace

void AddLimitCommand(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<LimitOptions>();
  auto* cmd = app.add_subcommand(
      "limit",
      "Set a process's memory limit live: TARGET is a pid, a label, or a segment (every "
      "process in it); SIZE is bytes (8G, 512MiB), a fraction of the budget (0.5, 50%) "
      "or none. Clamped to the budget; takes effect at the process's next page");
  cmd->add_option("TARGET", o->target, "pid, label or segment name")->required();
  cmd->add_option("SIZE", o->size, "8G, 512MiB, 0.5, 50% or none")->required();
  cmd->add_option("--segment", o->segment, "Only look in this segment");
  cmd->callback([o, &exit_code] { exit_code = RunLimit(*o); });
}

}  // namespace kvctl
