// The pass-through table (hooks/passthrough_table.h): records survive growth and erasure, and an
// allocation failure while a shard grows leaves every shard usable.
#include "hooks/passthrough_table.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <memory>
#include <new>
#include <thread>
#include <vector>

namespace {

// Global operator new that a test can make fail on this thread (the table's growth allocates).
thread_local bool t_fail_allocations = false;

}  // namespace

void* operator new(std::size_t size) {
  if (t_fail_allocations) throw std::bad_alloc();
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t /*size*/) noexcept {
  std::free(p);
}

namespace kvcached::hooks {
namespace {

// Runs `body` on another thread; a body that does not finish within 10 s means a shard stayed
// locked: the test fails and the process ends (the stuck thread cannot be joined).
void FinishesOrDie(const char* what, std::function<void()> body) {
  auto done = std::async(std::launch::async, std::move(body));
  if (done.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
    std::fprintf(stderr, "FAILED: %s did not finish: a shard of the table stayed locked\n", what);
    std::fflush(stderr);
    std::_Exit(1);
  }
  done.get();
}

TEST(PassthroughTable, RecordsSurviveGrowthAndErasure) {
  auto table = std::make_unique<PassthroughTable>();
  constexpr std::uint64_t kCount = 20000;
  for (std::uint64_t i = 1; i <= kCount; ++i) {
    ASSERT_TRUE(table->Insert(i * 256, {i, static_cast<int>(i % 8)}));
  }
  EXPECT_EQ(table->Size(), kCount);
  for (std::uint64_t i = 1; i <= kCount; i += 2) {
    auto e = table->Erase(i * 256);
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->size, i);
    EXPECT_EQ(e->device, static_cast<int>(i % 8));
  }
  EXPECT_FALSE(table->Erase(256).has_value());
  for (std::uint64_t i = 2; i <= kCount; i += 2) ASSERT_TRUE(table->Erase(i * 256).has_value());
  EXPECT_EQ(table->Size(), 0U);
}

TEST(PassthroughTable, AFailedGrowthRecordsNothingAndLeavesTheShardUsable) {
  auto table = std::make_unique<PassthroughTable>();
  // The first insert into any shard must allocate that shard's table: make it fail.
  t_fail_allocations = true;
  bool inserted = true;
  try {
    inserted = table->Insert(0x7f0000001000, {4096, 0});
  } catch (const std::bad_alloc&) {
    t_fail_allocations = false;  // before gtest allocates its message
    ADD_FAILURE() << "Insert let bad_alloc escape (its callers are C hooks)";
    inserted = false;
  }
  t_fail_allocations = false;
  EXPECT_FALSE(inserted) << "a record was claimed although the table could not grow";
  // Every later call on that shard, from any thread, still completes.
  FinishesOrDie("Insert after a failed growth", [&] {
    EXPECT_TRUE(table->Insert(0x7f0000001000, {4096, 0}));
  });
  FinishesOrDie("Erase after a failed growth", [&] {
    auto e = table->Erase(0x7f0000001000);
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->size, 4096U);
  });
  EXPECT_EQ(table->Size(), 0U);
}

TEST(PassthroughTable, ConcurrentInsertsAndErasesKeepEveryRecord) {
  auto table = std::make_unique<PassthroughTable>();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&table, t] {
      for (std::uint64_t i = 1; i <= 5000; ++i) {
        const std::uint64_t ptr = (static_cast<std::uint64_t>(t) << 40) | (i << 8);
        ASSERT_TRUE(table->Insert(ptr, {i, t}));
        if (i % 3 == 0) ASSERT_TRUE(table->Erase(ptr).has_value());
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(table->Size(), 4U * (5000 - 5000 / 3));
}

}  // namespace
}  // namespace kvcached::hooks
