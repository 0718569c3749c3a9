#include "core/ledger/ledger_snapshot.h"

#include <algorithm>
#include <cstring>

#include "core/budget/fair_share.h"
#include "core/ledger/ledger_atomics.h"
#include "core/ledger/ledger_process.h"
#include "core/ledger/ledger_share.h"

namespace kvcached::ledger {

SegmentSnapshot TakeSnapshot(const Segment& segment) {
  const std::vector<std::byte> bytes = segment.Copy();
  SegmentHeader h{};
  std::memcpy(&h, bytes.data(), sizeof(h));
  SegmentSnapshot snap;
  snap.name = segment.name();
  // Geometry from the validated open, never from the (mutable) copy.
  snap.gpu_uuid = segment.gpu_uuid();
  snap.gpu_total = segment.gpu_total();
  snap.budget = segment.budget();
  snap.slot_count = segment.slot_count();
  snap.created_ns = h.created_ns;
  snap.pressure_seq = h.pressure_seq;
  snap.pressure_bytes = h.pressure_bytes;
  snap.pressure_pid = h.pressure_pid;

  const ProcessIdentity me = CurrentProcess();
  const std::uint64_t now = BoottimeNs();
  for (std::uint32_t i = 0; i < snap.slot_count; ++i) {
    LedgerSlot s{};
    std::memcpy(&s, bytes.data() + sizeof(SegmentHeader) + std::size_t{i} * sizeof(LedgerSlot),
                sizeof(s));
    if (s.owner == 0) continue;
    SlotSnapshot out;
    out.index = i;
    out.owner_word = s.owner;
    out.state = OwnerState(s.owner);
    out.pid = OwnerPid(s.owner);
    out.start_ticks = OwnerStart(s.owner);
    out.pidns = s.pidns;
    out.limit = s.limit;
    out.tentative = s.tentative;
    out.charged = s.charged;
    out.in_use = s.in_use;
    out.reserved = s.charged > s.in_use ? s.charged - s.in_use : 0;
    out.peak = s.peak;
    out.other = s.other;
    out.heartbeat_ns = s.heartbeat_ns;
    out.attached_ns = s.attached_ns;
    out.pages_mapped = s.pages_mapped;
    out.pages_unmapped = s.pages_unmapped;
    out.sync_maps = s.sync_maps;
    out.budget_refusals = s.budget_refusals;
    out.engine_steps = s.engine_steps;
    out.engine_hook_ns = s.engine_hook_ns;
    out.engine_hook_c_calls = s.engine_hook_c_calls;
    out.engine_reported =
        s.engine_steps != 0 || s.engine_hook_ns != 0 || s.engine_hook_c_calls != 0;
    out.weight_milli = s.share_weight == 0 ? kDefaultWeightMilli : s.share_weight;
    out.share_min = s.share_min;
    out.share_unit = s.share_unit;
    if (StarvedNow(s.starved_since_ns, s.starved_last_ns, now)) {
      out.starved_since_ns = s.starved_since_ns;
    }
    out.share_preempted = s.share_preempted;
    out.share_given = s.share_given;
    s.label[kLabelBytes - 1] = '\0';
    out.label = s.label.data();
    out.other_pidns = s.pidns != 0 && me.pidns != 0 && s.pidns != me.pidns;
    out.dead = out.state == SlotState::kReclaiming ||
               OwnerIsDead(s.owner, s.pidns, s.heartbeat_ns, me.pidns, now);
    snap.charged = SatAdd(snap.charged, out.charged);
    snap.in_use = SatAdd(snap.in_use, out.in_use);
    snap.reserved = SatAdd(snap.reserved, out.reserved);
    snap.tentative = SatAdd(snap.tentative, out.tentative);
    (out.dead ? snap.dead : snap.live) += 1;
    snap.slots.push_back(std::move(out));
  }
  // Fair shares among the live engines, each as if it asked for more (what it may claim now), in
  // the units the engines published (exact bytes for a slot without one), as the engines do.
  std::vector<ShareInput> inputs;
  std::vector<SlotSnapshot*> live;
  for (SlotSnapshot& s : snap.slots) {
    if (s.dead) continue;
    inputs.push_back({std::min(s.weight_milli, kMaxWeightMilli), std::min(s.share_min, snap.budget),
                      SatAdd(s.tentative, s.charged), s.reserved, s.starved_since_ns,
                      std::min(s.share_unit, snap.budget)});
    live.push_back(&s);
  }
  for (std::size_t i = 0; i < live.size(); ++i) {
    const std::uint64_t share = ShareIfAsking(inputs, i, snap.budget, 1);
    live[i]->fair_share = share;
    const std::uint64_t held = inputs[i].held;
    // Less than one of its units short is not starved (the engines' rule).
    const bool short_by_a_unit = share > held && share - held >= UnitOf(inputs[i], 1);
    live[i]->deficit = live[i]->starved_since_ns != 0 && short_by_a_unit ? share - held : 0;
  }
  return snap;
}

}  // namespace kvcached::ledger
