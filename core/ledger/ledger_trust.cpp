#include "core/ledger/ledger_trust.h"

#include <fmt/core.h>
#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <vector>

namespace kvcached::ledger {

std::string UserName(uid_t uid) {
  passwd pw{};
  passwd* found = nullptr;
  std::vector<char> buf(4096);
  if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) == 0 && found != nullptr) {
    return found->pw_name;
  }
  return std::to_string(uid);
}

std::string GroupName(gid_t gid) {
  struct group gr {};
  struct group* found = nullptr;
  std::vector<char> buf(16384);
  if (::getgrgid_r(gid, &gr, buf.data(), buf.size(), &found) == 0 && found != nullptr) {
    return found->gr_name;
  }
  return std::to_string(gid);
}

std::optional<gid_t> GroupId(const std::string& group) {
  if (group.empty()) return std::nullopt;
  struct group gr {};
  struct group* found = nullptr;
  std::vector<char> buf(16384);
  if (::getgrnam_r(group.c_str(), &gr, buf.data(), buf.size(), &found) == 0 && found != nullptr) {
    return found->gr_gid;
  }
  return std::nullopt;
}

std::string OwnerText(uid_t uid) {
  return fmt::format("user {} (uid {})", UserName(uid), uid);
}

TrustPolicy TrustPolicyFor(const std::string& group_name) {
  TrustPolicy p;
  p.self = ::geteuid();
  p.group_name = group_name;
  p.group = GroupId(group_name);
  return p;
}

std::optional<std::string> TrustProblem(const struct stat& st, const TrustPolicy& policy,
                                        const std::string& path) {
  const std::string name = path.substr(path.rfind('/') + 1);
  if (!S_ISREG(st.st_mode)) {
    return fmt::format(
        "{} is not a regular file (owned by {}): something else was put at a ledger segment's "
        "path. Fix: remove it (as its owner or root), or set KVCACHED_IPC_NAME to use another "
        "segment",
        path, OwnerText(st.st_uid));
  }
  if ((st.st_mode & S_IWOTH) != 0) {
    return fmt::format(
        "{} is world-writable (mode {:04o}, owned by {}), so any local user could have planted "
        "or rewritten it (budget, limits, usage). Fix: `kvctl delete {}` as its owner or root "
        "(or `kvctl delete --force {}` while engines use it), and never give it a world-writable "
        "KVCACHED_SHM_MODE",
        path, st.st_mode & 07777, OwnerText(st.st_uid), name, name);
  }
  if (st.st_uid == policy.self || st.st_uid == 0) return std::nullopt;
  if (policy.group && st.st_gid == *policy.group) return std::nullopt;
  const std::string group_note =
      policy.group_name.empty() ? std::string("no KVCACHED_SHM_GROUP is set")
                                : fmt::format("its group is {} (gid {}), not KVCACHED_SHM_GROUP={}",
                                              GroupName(st.st_gid), st.st_gid, policy.group_name);
  return fmt::format(
      "{} is owned by {}, not by this process's {} or root, and {}: another user may have "
      "created it to read or cap this process's memory, so it is not used. Fix: remove it "
      "(`kvctl delete --force {}` as root or its owner), or set KVCACHED_IPC_NAME to use "
      "another segment; engines of several users share one only through an operator group "
      "(KVCACHED_SHM_GROUP, see docs/configuration.md)",
      path, OwnerText(st.st_uid), OwnerText(policy.self), group_note, name);
}

}  // namespace kvcached::ledger
