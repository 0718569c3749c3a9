// kvctl share TARGET --weight W [--min SIZE]: sets an engine's share live (docs/sharing.md). The
// policy reads the words at every verdict, so the next engine step obeys them.
#include <fmt/core.h>

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <optional>

#include "core/ledger/ledger_layout.h"
#include "core/ledger/ledger_share.h"
#include "tools/kvctl/commands.h"
#include "tools/kvctl/format.h"
#include "tools/kvctl/limit_value.h"
#include "tools/kvctl/slot_target.h"

namespace kvctl {
namespace {

namespace ledger = kvcached::ledger;

struct ShareOptions {
  std::string target;
  std::string weight;
  std::string min;
  std::string segment;
  bool weight_given = false;  // `--weight ""` is bad input, not "no weight"
  bool min_given = false;
};

// A weight in thousandths from "2", "0.5", "1.25": plain decimal digits, 0.001..1000.
std::optional<std::uint64_t> ParseWeight(const std::string& text) {
  if (text.empty() || text.size() > 16) return std::nullopt;
  int dots = 0;
  for (char c : text) {
    if (c == '.') {
      ++dots;
    } else if (std::isdigit(static_cast<unsigned char>(c)) == 0) {
      return std::nullopt;
    }
  }
  if (dots > 1 || text == ".") return std::nullopt;
  const double milli = std::strtod(text.c_str(), nullptr) * 1000.0;
  if (!std::isfinite(milli) || milli < 1.0 - 1e-9 ||
      milli > static_cast<double>(ledger::kMaxWeightMilli) + 1e-9) {
    return std::nullopt;
  }
  return static_cast<std::uint64_t>(std::llround(milli));
}

std::string FormatWeight(std::uint64_t milli) {
  std::string text = fmt::format("{:.3f}", static_cast<double>(milli) / 1000.0);
  while (text.back() == '0') text.pop_back();
  if (text.back() == '.') text.pop_back();
  return text;
}

int RunShare(const ShareOptions& o) {
  if (!o.weight_given && !o.min_given) {
    PrintError("share: give --weight W and/or --min SIZE (e.g. `kvctl share PID --weight 2`)");
    return kExitUsage;
  }
  std::optional<std::uint64_t> weight;
  if (o.weight_given) {
    weight = ParseWeight(o.weight);
    if (!weight) {
      PrintError(
          fmt::format("bad weight '{}': use a decimal number from 0.001 to 1000, e.g. 2 or "
                      "0.5 (the default weight is 1)",
                      Printable(o.weight)));
      return kExitUsage;
    }
  }
  std::optional<LimitValue> min;
  if (o.min_given) {
    auto parsed = ParseLimitValue(o.min);
    if (!parsed.ok()) {
      PrintError(fmt::format("--min: {}", parsed.status().message()));
      return kExitUsage;
    }
    min = parsed.value();
  }
  TargetResolution targets = ResolveTargets(o.target, o.segment, "share");
  if (targets.exit_code != kExitOk) return targets.exit_code;

  return ApplyToTargets(
      targets, "its share",
      [&](const SlotMatch& m, ledger::Segment& seg) -> kvcached::Result<std::string> {
        std::optional<std::uint64_t> min_bytes;
        if (min) min_bytes = min->none ? 0 : min->Resolve(seg.budget());
        auto stored = ledger::SetSlotShare(seg, m.slot.index, m.slot.owner_word, weight, min_bytes);
        if (!stored.ok()) return stored.status();
        std::string msg = fmt::format("weight {}, guaranteed minimum {}",
                                      FormatWeight(stored.value().weight_milli),
                                      FormatBytes(stored.value().min_bytes));
        if (min_bytes && *min_bytes > stored.value().min_bytes) {
          msg += fmt::format(" (asked {}, clamped to the budget)", FormatBytes(*min_bytes));
        }
        return msg;
      });
}

}  // namespace

void AddShareCommand(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<ShareOptions>();
  auto* cmd = app.add_subcommand(
      "share",
      "Set a process's share of the GPU budget live (docs/sharing.md): TARGET is a pid, a "
      "label, or a segment (every process in it); --weight W (0.001..1000, default 1) makes "
      "fair shares proportional to the weights; --min SIZE guarantees memory under contention "
      "(bytes, a fraction of the budget, or none)");
  cmd->add_option("TARGET", o->target, "pid, label or segment name")->required();
  auto* weight = cmd->add_option("--weight", o->weight, "weight, e.g. 2 or 0.5");
  auto* min = cmd->add_option("--min", o->min, "guaranteed minimum: 8G, 512MiB, 0.25, 25% or none");
  cmd->add_option("--segment", o->segment, "Only look in this segment");
  cmd->callback([o, weight, min, &exit_code] {
    o->weight_given = weight->count() > 0;
    o->min_given = min->count() > 0;
    exit_code = RunShare(*o);
  });
}

}  // namespace kvctl
