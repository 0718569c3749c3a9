// The one options table against the tree: every KVCACHED_* environment variable the project reads
// (C++, Python, shell, CMake test environments) is in the table, every table entry is read
// somewhere and documented in docs/configuration.md, and the docs name no other. Plus the
// misspelling finder the shim and `kvctl doctor` use.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/config/config.h"
#include "core/config/unknown_variables.h"
#include "core/pool/zero_page.h"

#ifndef KVCACHED_SOURCE_DIR
#error "the build defines KVCACHED_SOURCE_DIR as the source tree"
#endif

namespace kvcached {
namespace {

namespace fs = std::filesystem;

// A line carrying this marker holds names that are wrong on purpose (tests of the finder).
constexpr const char* kMarker = "not-a-variable";

enum class Kind { kCode, kPython, kShell, kCMake, kOther };

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

Kind KindOf(const fs::path& path, const std::string& text) {
  const std::string ext = path.extension().string();
  const std::string name = path.filename().string();
  if (ext == ".cpp" || ext == ".h" || ext == ".c" || ext == ".cc" || ext == ".cu") {
    return Kind::kCode;
  }
  if (ext == ".py") return Kind::kPython;
  if (ext == ".sh" || text.rfind("#!/usr/bin/env bash", 0) == 0 || text.rfind("#!/bin/", 0) == 0) {
    return Kind::kShell;
  }
  if (name == "CMakeLists.txt" || ext == ".cmake") return Kind::kCMake;
  return Kind::kOther;
}

bool IsNameChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}
bool IsWordChar(char c) {
  return IsNameChar(c) || (c >= 'a' && c <= 'z');
}

// Every whole KVCACHED_* / ENABLE_KVCACHED token of `line` (prefixes such as KVCACHED_HOOK_ and
// names that continue in lower case are skipped), with the text before and after it.
template <class Fn>
void ForEachToken(const std::string& line, Fn fn) {
  for (std::size_t at = 0; at < line.size(); ++at) {
    const bool starts =
        line.compare(at, 9, "KVCACHED_") == 0 || line.compare(at, 15, "ENABLE_KVCACHED") == 0;
    if (!starts || (at > 0 && IsWordChar(line[at - 1]))) continue;
    std::size_t end = at;
    while (end < line.size() && IsNameChar(line[end])) ++end;
    const std::string name = line.substr(at, end - at);
    const bool whole = name.back() != '_' && (end == line.size() || !IsWordChar(line[end]));
    if (whole) fn(name, line.substr(0, at), line.substr(end));
    at = end;
  }
}

bool EndsWith(const std::string& text, const std::string& tail) {
  return text.size() >= tail.size() &&
         text.compare(text.size() - tail.size(), tail.size(), tail) == 0;
}

// Whether the token is an environment variable in this kind of file: a string literal in code,
// also a keyword argument (dict(os.environ, NAME=...)) in Python, any name in shell, and a test
// ENVIRONMENT entry ("NAME=...") or $ENV{NAME} in CMake.
bool IsEnvUse(Kind kind, const std::string& before, const std::string& after) {
  const bool quoted = EndsWith(before, "\"") || EndsWith(before, "'");
  switch (kind) {
    case Kind::kCode:
      return quoted;
    case Kind::kPython:
      return quoted || (after.size() >= 2 && after[0] == '=' && after[1] != '=');
    case Kind::kShell:
      return true;
    case Kind::kCMake:
      return (EndsWith(before, "\"") && !after.empty() && after[0] == '=') ||
             EndsWith(before, "ENV{");
    case Kind::kOther:
      return false;
  }
  return false;
}

// Calls fn(relative path, text) for every file of the source tree that can read a variable:
// the top-level files and the source folders, without build folders and caches.
template <class Fn>
void ForEachSourceFile(Fn fn) {
  const fs::path root = KVCACHED_SOURCE_DIR;
  const std::vector<std::string> dirs = {"bench", "cmake",   "core",      "examples",
                                         "hooks", "include", "packaging", "scripts",
                                         "shim",  "tests",   "tools",     ".ci"};
  for (const auto& entry : fs::directory_iterator(root)) {
    if (entry.is_regular_file()) fn(entry.path().filename().string(), entry.path());
  }
  for (const std::string& dir : dirs) {
    if (!fs::exists(root / dir)) continue;
    for (auto it = fs::recursive_directory_iterator(root / dir); it != fs::end(it); ++it) {
      const std::string file = it->path().filename().string();
      if (it->is_directory() && (file == "__pycache__" || file.rfind("build", 0) == 0)) {
        it.disable_recursion_pending();
        continue;
      }
      if (it->is_regular_file()) fn(fs::relative(it->path(), root).string(), it->path());
    }
  }
}

// Names that look like variables but are C API constants (include/kvcached/kvcached.h) or CMake
// cache entries (option()/set()).
std::set<std::string> NonVariables(const fs::path& root) {
  std::set<std::string> out;
  std::istringstream header(ReadFile(root / "include/kvcached/kvcached.h"));
  for (std::string line; std::getline(header, line);) {
    ForEachToken(line,
                 [&](const std::string& name, const std::string& before, const std::string& after) {
                   const bool defined = EndsWith(before, "#define ");
                   // An enumerator starts its line: "  KVCACHED_OK = 0,".
                   const bool enumerator = before.find_first_not_of(" \t") == std::string::npos &&
                                           after.find('=') != std::string::npos &&
                                           after.find_first_not_of(" ") == after.find('=');
                   if (defined || enumerator) out.insert(name);
                 });
  }
  ForEachSourceFile([&](const std::string&, const fs::path& path) {
    if (path.filename() != "CMakeLists.txt" && path.extension() != ".cmake") return;
    std::istringstream text(ReadFile(path));
    for (std::string line; std::getline(text, line);) {
      ForEachToken(line,
                   [&](const std::string& name, const std::string& before, const std::string&) {
                     if (EndsWith(before, "option(") || EndsWith(before, "set(")) out.insert(name);
                   });
    }
  });
  return out;
}

// name -> "file:line" of every read found in the source tree.
std::map<std::string, std::vector<std::string>> VariablesReadByTheTree() {
  const fs::path root = KVCACHED_SOURCE_DIR;
  const std::set<std::string> skip_files = {
      "core/config/variables.cpp",  // the table itself is no reader
  };
  const std::set<std::string> not_variables = NonVariables(root);
  std::map<std::string, std::vector<std::string>> found;
  ForEachSourceFile([&](const std::string& rel, const fs::path& path) {
    if (skip_files.count(rel) != 0) return;
    const std::string text = ReadFile(path);
    const Kind kind = KindOf(path, text);
    if (kind == Kind::kOther) return;
    std::istringstream lines(text);
    int number = 0;
    for (std::string line; std::getline(lines, line);) {
      ++number;
      if (line.find(kMarker) != std::string::npos) continue;
      ForEachToken(
          line, [&](const std::string& name, const std::string& before, const std::string& after) {
            if (not_variables.count(name) == 0 && IsEnvUse(kind, before, after)) {
              found[name].push_back(rel + ":" + std::to_string(number));
            }
          });
    }
  });
  return found;
}

std::set<std::string> TabledNames() {
  std::set<std::string> names;
  for (const ConfigVarDoc& doc : ConfigVariables()) names.insert(doc.name);
  return names;
}

TEST(OptionsTable, EveryVariableTheTreeReadsIsInTheTable) {
  const auto found = VariablesReadByTheTree();
  ASSERT_GT(found.size(), 20U) << "the scan found almost nothing: is KVCACHED_SOURCE_DIR right?";
  for (const auto& [name, where] : found) {
    EXPECT_NE(FindConfigVariable(name), nullptr)
        << name << " is read at " << where.front()
        << " but is not in the options table (core/config/variables.cpp): add it there and to "
           "docs/configuration.md";
  }
}

TEST(OptionsTable, EveryTabledVariableIsReadSomewhere) {
  const auto found = VariablesReadByTheTree();
  for (const std::string& name : TabledNames()) {
    EXPECT_EQ(found.count(name), 1U)
        << name << " is in the options table but nothing in the tree reads it: remove it";
  }
}

TEST(OptionsTable, ConfigurationDocListsExactlyTheTabledVariables) {
  const fs::path doc = fs::path(KVCACHED_SOURCE_DIR) / "docs/configuration.md";
  std::istringstream text(ReadFile(doc));
  const std::set<std::string> not_variables = NonVariables(KVCACHED_SOURCE_DIR);
  std::set<std::string> documented;
  bool skip_next = false;
  for (std::string line; std::getline(text, line);) {
    // In Markdown the marker is an HTML comment on the line before (invisible when rendered).
    const bool skip = skip_next;
    skip_next = line.find(kMarker) != std::string::npos;
    if (skip || skip_next) continue;
    ForEachToken(line, [&](const std::string& name, const std::string&, const std::string& after) {
      // KVCACHED_HOOK_* is a family; C API constants are no variables.
      if ((after.empty() || after[0] != '*') && not_variables.count(name) == 0) {
        documented.insert(name);
      }
    });
  }
  const std::set<std::string> tabled = TabledNames();
  for (const std::string& name : documented) {
    EXPECT_EQ(tabled.count(name), 1U)
        << "docs/configuration.md names " << name << ", which is not in the options table";
  }
  for (const std::string& name : tabled) {
    EXPECT_EQ(documented.count(name), 1U) << name << " is not documented in docs/configuration.md";
  }
}

TEST(OptionsTable, EveryEntryHasTypeDefaultRangeAndDoc) {
  std::set<std::string> seen;
  for (const ConfigVarDoc& doc : ConfigVariables()) {
    EXPECT_TRUE(seen.insert(doc.name).second) << doc.name << " is listed twice";
    EXPECT_STRNE(VarTypeName(doc.type), "?") << doc.name;
    EXPECT_STRNE(VarScopeName(doc.scope), "?") << doc.name;
    EXPECT_GT(std::string(doc.default_value).size(), 0U) << doc.name;
    EXPECT_GT(std::string(doc.accepted).size(), 0U) << doc.name;
    EXPECT_GT(std::string(doc.meaning).size(), 0U) << doc.name;
  }
}

TEST(OptionsTable, ZeroMemoryIsWhatTheZeroPageHolds) {
  for (std::size_t page : {2U, 4U, 8U, 64U, 1024U}) {
    for (std::size_t chunk : {0U, 2U, 8U, 32U}) {
      Config c;
      c.page_size_mb = page;
      c.zero_chunk_mb = chunk;
      EXPECT_EQ(c.zero_memory_bytes(), ZeroPage::BytesFor(c.page_size(), c.zero_chunk_pages()))
          << page << " MiB pages, zero chunk " << chunk;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Misspelled and unknown variables.

std::map<std::string, std::string> Unknown(const std::vector<std::string>& names) {
  std::map<std::string, std::string> out;
  for (const UnknownVariable& u : FindUnknownVariables(names)) out[u.name] = u.suggestion;
  return out;
}

TEST(UnknownVariables, MisspellingsFromTheIssueAreFoundWithTheClosestName) {
  const auto found = Unknown({
      "KVCACHED_GPU_UTILISATION", "KVCACHED_PAGE_SIZE", "KVCACHED_BUGDET",  // not-a-variable
      "ENABLE_KVCACHE", "KVCACHED_LOGLEVEL", "kvcached_budget",             // not-a-variable
      "enable_kvcached", "KVCACHED_HOOK_IDLE_TRIM",                         // not-a-variable
  });
  const std::map<std::string, std::string> expected = {
      {"KVCACHED_GPU_UTILISATION", "KVCACHED_GPU_UTILIZATION"},  // not-a-variable
      {"KVCACHED_PAGE_SIZE", "KVCACHED_PAGE_SIZE_MB"},           // not-a-variable
      {"KVCACHED_BUGDET", "KVCACHED_BUDGET"},                    // not-a-variable
      {"ENABLE_KVCACHE", "ENABLE_KVCACHED"},                     // not-a-variable
      {"KVCACHED_LOGLEVEL", "KVCACHED_LOG_LEVEL"},               // not-a-variable
      {"kvcached_budget", "KVCACHED_BUDGET"},
      {"enable_kvcached", "ENABLE_KVCACHED"},
      {"KVCACHED_HOOK_IDLE_TRIM", "KVCACHED_HOOK_IDLE_TRIM_S"},  // not-a-variable
  };
  EXPECT_EQ(found, expected);
}

TEST(UnknownVariables, KnownAndUnrelatedNamesAreLeftAlone) {
  std::vector<std::string> names = {"PATH",
                                    "HOME",
                                    "LD_PRELOAD",
                                    "CUDA_VISIBLE_DEVICES",
                                    "VLLM_USE_V1",
                                    "PYTORCH_CUDA_ALLOC_CONF",
                                    "OMP_NUM_THREADS",
                                    "KV_CACHE_DTYPE",
                                    ""};
  for (const ConfigVarDoc& doc : ConfigVariables()) names.emplace_back(doc.name);
  EXPECT_TRUE(FindUnknownVariables(names).empty());
}

TEST(UnknownVariables, AnyKvcachedPrefixedNameIsReportedEvenWithoutASuggestion) {
  const auto found = Unknown({"KVCACHED_FROBNICATE_EVERYTHING", "KVCACHE_X"});  // not-a-variable
  ASSERT_EQ(found.size(), 2U);
  EXPECT_EQ(found.at("KVCACHED_FROBNICATE_EVERYTHING"), "");  // not-a-variable
}

TEST(UnknownVariables, DescriptionNamesBothAndStaysOneLine) {
  const std::string line =
      DescribeUnknown({"KVCACHED_BUGDET", "KVCACHED_BUDGET"});            // not-a-variable
  const std::string said = "KVCACHED_BUGDET is not a kvcached variable";  // not-a-variable
  EXPECT_NE(line.find(said), std::string::npos) << line;
  EXPECT_NE(line.find("did you mean KVCACHED_BUDGET?"), std::string::npos) << line;
  EXPECT_NE(DescribeUnknown({"kvcached_budget", "KVCACHED_BUDGET"}).find("case-sensitive"),
            std::string::npos);
  const std::string hostile = DescribeUnknown({"KVCACHED_\n[kvcached error] forged", ""});
  EXPECT_EQ(hostile.find('\n'), std::string::npos) << hostile;
}

TEST(UnknownVariables, DistanceCountsASwapAsOneEditAndIgnoresCase) {
  EXPECT_EQ(VariableNameDistance("KVCACHED_BUGDET", "KVCACHED_BUDGET"), 1U);  // not-a-variable
  EXPECT_EQ(VariableNameDistance("kvcached_budget", "KVCACHED_BUDGET"), 0U);
  EXPECT_EQ(VariableNameDistance("ABC", ""), 3U);
  const std::string short_name = "KVCACHED_PAGE_SIZE";  // not-a-variable
  EXPECT_EQ(VariableNameDistance(short_name, "KVCACHED_PAGE_SIZE_MB"), 3U);
}

TEST(UnknownVariables, EnvironmentNamesAreReadFromTheProcess) {
  ASSERT_EQ(::setenv("KVCACHED_OPTIONS_TEST_PROBE", "1", 1), 0);  // not-a-variable
  const auto names = EnvironmentNames();
  EXPECT_NE(std::find(names.begin(), names.end(), "KVCACHED_OPTIONS_TEST_PROBE"),  // not-a-variable
            names.end());
  const auto found = Unknown(names);
  EXPECT_EQ(found.count("KVCACHED_OPTIONS_TEST_PROBE"), 1U);  // not-a-variable
  ::unsetenv("KVCACHED_OPTIONS_TEST_PROBE");                  // not-a-variable
}

}  // namespace
}  // namespace kvcached
