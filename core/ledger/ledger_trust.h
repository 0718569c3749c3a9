// The ledger's trust model (docs/ledger.md "Trust model"): whose segment an engine will write its
// usage into and take its budget from. A segment is trusted when it is a regular file, is not
// world-writable, and is owned by the engine's own effective uid, by root, or by the operator
// group named in KVCACHED_SHM_GROUP. Checked with fstat on the very descriptor that is mapped.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <optional>
#include <string>

namespace kvcached::ledger {

struct TrustPolicy {
  uid_t self = 0;              // the engine's effective uid
  std::optional<gid_t> group;  // the operator group (KVCACHED_SHM_GROUP), when it exists
  std::string group_name;      // as configured (for messages)
};

// The policy of this process with `group_name` (KVCACHED_SHM_GROUP; empty = none). A group
// that does not exist trusts nobody extra.
TrustPolicy TrustPolicyFor(const std::string& group_name);

// Empty when a process under `policy` may write into a segment with attributes `st`; else one
// sentence saying what is wrong with `path` (owner named) and the fix.
std::optional<std::string> TrustProblem(const struct stat& st, const TrustPolicy& policy,
                                        const std::string& path);

// "user alice (uid 1000)"; the uid alone when it has no name.
std::string OwnerText(uid_t uid);
std::string UserName(uid_t uid);
std::string GroupName(gid_t gid);
std::optional<gid_t> GroupId(const std::string& group);

}  // namespace kvcached::ledger
