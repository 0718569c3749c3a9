// What `kvctl limit` and `kvctl share` have in common: finding the processes a TARGET names (a
// pid, a label, or a segment meaning every process in it), deciding who may change them (root,
// the segment's owner, or the process's owner), and opening their segments for writing.
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/common/status.h"
#include "core/ledger/ledger_segment.h"
#include "core/ledger/ledger_snapshot.h"

namespace kvctl {

struct SlotMatch {
  std::string segment;
  uid_t segment_owner = 0;
  kvcached::ledger::SlotSnapshot slot;
};

struct TargetResolution {
  std::vector<SlotMatch> matches;  // live processes only
  int exit_code = 0;               // non-zero: nothing matched (the error is printed)
};

// The live processes `target` names, in `segment` when given, else in every segment this user
// can read. `command` ("limit", "share") appears in the messages.
TargetResolution ResolveTargets(const std::string& target, const std::string& segment,
                                const std::string& command);

// Empty when this user may change `m` (root, the segment's owner, the process's owner), else the
// "permission denied" line naming the owners. `change` says what, e.g. "its limit".
std::optional<std::string> WriteRefusal(const SlotMatch& m, const std::string& change);

// "SEGMENT: pid N (label): ", the start of each line a command prints for a process.
std::string ProcessLine(const SlotMatch& m);

// Segments opened for writing (kOperator), each once.
class OperatorSegments {
 public:
  kvcached::Result<kvcached::ledger::Segment*> Get(const std::string& name);

 private:
  std::map<std::string, std::unique_ptr<kvcached::ledger::Segment>> open_;
};

// Applies `change` to every process of `targets` this user may change, each segment opened for
// writing once; `change` returns the rest of the line printed for the process (after
// ProcessLine) or an error. Refusals and errors are printed, one line each. `what` names the
// change for refusals, e.g. "its limit". Returns kExitOk, or kExitFailure when any failed.
using SlotChange =
    std::function<kvcached::Result<std::string>(const SlotMatch&, kvcached::ledger::Segment&)>;
int ApplyToTargets(const TargetResolution& targets, const std::string& what,
                   const SlotChange& change);

}  // namespace kvctl
