// The pure parts of `kvctl launch`: the file parser, the environment each engine gets, shell
// quoting for --dry-run, and the line splitter of engine output. The processes themselves are
// tested end to end in test_launch.py.
#include "tools/kvctl/launch_spec.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tools/kvctl/launch_child.h"
#include "tools/kvctl/launch_plan.h"

namespace kvctl {
namespace {

LaunchSpec Parse(const std::string& text) {
  auto spec = ParseLaunchText(text, "f.yaml");
  EXPECT_TRUE(spec.ok()) << spec.status().message();
  return spec.ok() ? spec.value() : LaunchSpec{};
}

std::string ErrorOf(const std::string& text) {
  auto spec = ParseLaunchText(text, "f.yaml");
  EXPECT_FALSE(spec.ok());
  return spec.ok() ? "" : spec.status().message();
}

TEST(LaunchSpecTest, DurationsTakeUnitsOrPlainSecondsAndRefuseTheRest) {
  EXPECT_EQ(ParseDuration("500ms").value().count(), 500);
  EXPECT_EQ(ParseDuration("2s").value().count(), 2000);
  EXPECT_EQ(ParseDuration("1.5").value().count(), 1500);
  EXPECT_EQ(ParseDuration("2m").value().count(), 120000);
  EXPECT_EQ(ParseDuration("1h").value().count(), 3600000);
  for (const char* bad : {"", "soon", "5 s", "-1s", "3d", "nan", "1e300s"}) {
    EXPECT_FALSE(ParseDuration(bad).ok()) << bad;
  }
}

TEST(LaunchSpecTest, DefaultsAreFilledAndAStringCommandRunsThroughTheShell) {
  const LaunchSpec spec = Parse("engines:\n  - command: serve --port 1\n  - command: [a, b]\n");
  ASSERT_EQ(spec.engines.size(), 2u);
  EXPECT_EQ(spec.engines[0].label, "engine0");
  EXPECT_EQ(spec.engines[1].label, "engine1");
  EXPECT_EQ(spec.engines[0].argv,
            (std::vector<std::string>{"/bin/sh", "-c", "exec serve --port 1"}));
  EXPECT_EQ(spec.engines[1].argv, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(spec.engines[0].restart, RestartPolicy::kNever);
  EXPECT_FALSE(spec.engines[0].ready.any());
  EXPECT_EQ(spec.grace.count(), 10000);
}

TEST(LaunchSpecTest, ErrorsNameTheLineColumnAndKey) {
  EXPECT_EQ(ErrorOf("engines:\n  - command: [x]\n    gpu: [0, 1]\n"),
            "f.yaml:3:10: engines[0].gpu: expected a single value (a string or number)");
  EXPECT_EQ(ErrorOf("engines:\n  - command: [x]\n    backoff: {initial: 2s, max: 1s}\n"),
            "f.yaml:3:14: engines[0].backoff: max is shorter than initial");
  EXPECT_EQ(ErrorOf("gpus:\n  \"1\": {budget: 1G}\nengines:\n  - command: [x]\n    gpu: 0\n"),
            "f.yaml:2:3: gpus.1: no engine runs on this GPU (check `gpu:`)");
  EXPECT_EQ(ErrorOf("engines: []\n"), "f.yaml:1:10: engines: expected a non-empty list of engines");
  EXPECT_NE(ErrorOf("engines:\n  - command: [x]\n    ready: {}\n")
                .find("engines[0].ready: give `port:` or `log:`"),
            std::string::npos);
}

TEST(LaunchSpecTest, VariablesTheLauncherOwnsAreRefusedWithTheKeyToUse) {
  EXPECT_NE(ErrorOf("env: {CUDA_VISIBLE_DEVICES: '1'}\nengines:\n  - command: [x]\n")
                .find("f.yaml:1:7: env.CUDA_VISIBLE_DEVICES: kvctl launch sets "
                      "CUDA_VISIBLE_DEVICES itself; use the engine's `gpu:` key"),
            std::string::npos);
  EXPECT_NE(ErrorOf("engines:\n  - command: [x]\n    env: {KVCACHED_BUDGET: 1G}\n")
                .find("use `gpus: {GPU: {budget: ...}}`"),
            std::string::npos);
}

TEST(LaunchPlanTest, EveryEngineOnAGpuGetsTheSameBudgetVariables) {
  const LaunchSpec spec = Parse(
      "gpus:\n  \"0\": {budget: 40G, ipc_name: team}\nenv: {A: top, B: top}\n"
      "engines:\n  - {label: x, command: [x], gpu: 0, env: {B: mine}}\n"
      "  - {label: y, command: [y], gpu: 0}\n  - {label: z, command: [z], gpu: 1}\n");
  const auto x = EngineEnv(spec, spec.engines[0], "/s.so", "");
  const auto y = EngineEnv(spec, spec.engines[1], "/s.so", "");
  const auto z = EngineEnv(spec, spec.engines[2], "/s.so", "");
  for (const auto* env : {&x, &y}) {
    EXPECT_EQ(env->at("KVCACHED_BUDGET"), "40G");
    EXPECT_EQ(env->at("KVCACHED_IPC_NAME"), "team");
    EXPECT_EQ(env->at("CUDA_VISIBLE_DEVICES"), "0");
    EXPECT_EQ(env->at("LD_PRELOAD"), "/s.so");
  }
  EXPECT_EQ(x.at("KVCACHED_LABEL"), "x");
  EXPECT_EQ(x.at("B"), "mine");  // the engine's own env wins over the file's
  EXPECT_EQ(y.at("B"), "top");
  EXPECT_EQ(z.count("KVCACHED_BUDGET"), 0u);  // GPU 1 has no entry in `gpus:`
  EXPECT_EQ(z.at("CUDA_VISIBLE_DEVICES"), "1");
}

TEST(LaunchPlanTest, AnInheritedPreloadIsKeptAfterTheShimButAnotherShimIsDropped) {
  const LaunchSpec spec = Parse("engines:\n  - command: [x]\n");
  EXPECT_EQ(EngineEnv(spec, spec.engines[0], "/s.so", "/other.so").at("LD_PRELOAD"),
            "/s.so:/other.so");
  EXPECT_EQ(EngineEnv(spec, spec.engines[0], "/s.so", "/old/libkvcached_shim.so").at("LD_PRELOAD"),
            "/s.so");
}

TEST(LaunchPlanTest, MergeEnvReplacesInheritedValuesAndKeepsTheRest) {
  const auto env = MergeEnv({"PATH=/bin", "LD_PRELOAD=/x.so", "HOME=/root"},
                            {{"LD_PRELOAD", "/s.so"}, {"NEW", "1"}});
  EXPECT_EQ(env,
            (std::vector<std::string>{"PATH=/bin", "HOME=/root", "LD_PRELOAD=/s.so", "NEW=1"}));
}

TEST(LaunchPlanTest, ShellQuoteQuotesOnlyWhatAShellWouldChange) {
  EXPECT_EQ(ShellQuote("--port=8001"), "--port=8001");
  EXPECT_EQ(ShellQuote("a b"), "'a b'");
  EXPECT_EQ(ShellQuote("it's"), "'it'\\''s'");
  EXPECT_EQ(ShellQuote(""), "''");
  EXPECT_EQ(ShellQuote("$HOME"), "'$HOME'");
}

TEST(LaunchChildTest, LinesAreSplitAcrossReadsAndOverlongOnesAreCut) {
  LineSplitter splitter(8);
  std::vector<std::string> lines;
  splitter.Feed("ab", 2, lines);
  splitter.Feed("c\r\nde\n0123456789", 16, lines);
  EXPECT_EQ(lines, (std::vector<std::string>{"abc", "de", "01234567"}));
  std::string rest;
  ASSERT_TRUE(splitter.Flush(rest));
  EXPECT_EQ(rest, "89");
  EXPECT_FALSE(splitter.Flush(rest));
}

}  // namespace
}  // namespace kvctl
