// Running the built kvctl from the ledger tests: its output, and one segment of `list --json`.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/ledger/test_util.h"

namespace kvcached::ledger::testing {

inline RunResult Kvctl(std::vector<std::string> args, std::vector<std::string> env = {}) {
  args.insert(args.begin(), KvctlPath());
  return Run(args, env, std::chrono::seconds(30));
}

inline bool Has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// The JSON of one segment from `kvctl list --json` (null when absent).
inline nlohmann::json ListEntry(const std::string& name) {
  const RunResult r = Kvctl({"list", "--json"});
  EXPECT_EQ(r.rc, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);  // (a loop over parse(...).at() would dangle)
  for (const auto& s : j.at("segments")) {
    if (s.at("name") == name) return s;
  }
  return nullptr;
}

}  // namespace kvcached::ledger::testing
