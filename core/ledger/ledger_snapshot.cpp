#include "core/ledger/ledger_snapshot.h"

#include <cstring>

#include "core/ledger/ledger_atomics.h"
#include "core/ledger/ledger_process.h"

namespace kvcached::ledger {

SegmentSnapshot TakeSnapshot(const Segment& segment) {
  const std::vector<std::byte> bytes = segment.Copy();
  SegmentHeader h;
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
    LedgerSlot s;
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
    s.label[kLabelBytes - 1] = '\0';
    out.label = s.label;
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
  return snap;
}

}  // namespace kvcached::ledger
