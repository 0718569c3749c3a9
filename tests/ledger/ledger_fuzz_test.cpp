// Randomised validation test: at least a million mutated segment images go through the pure
// validator (no crash, no hang, each accepted or refused with a message naming the file), and a
// few hundred mutated segments go through a real open of /dev/shm.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <random>

#include "core/ledger/ledger_layout.h"
#include "core/ledger/ledger_segment.h"
#include "core/ledger/ledger_snapshot.h"
#include "core/ledger/ledger_validate.h"
#include "tests/ledger/test_util.h"

namespace kvcached::ledger {
namespace {

constexpr std::uint64_t kPage = 2ULL << 20;

std::vector<std::byte> ValidImage(std::uint32_t slots, std::mt19937_64& rng) {
  std::vector<std::byte> bytes(SegmentBytes(slots));
  auto& h = *reinterpret_cast<SegmentHeader*>(bytes.data());
  h.magic = kMagic;
  h.version = kLayoutVersion;
  h.header_size = sizeof(SegmentHeader);
  h.slot_count = slots;
  h.slot_size = sizeof(LedgerSlot);
  h.gpu_total = 40960 * kPage;
  h.budget = 30000 * kPage;
  h.pressure_seq = rng() % 1000;
  std::strcpy(h.gpu_uuid.data(), "GPU-0a1b2c3d-0000-1111-2222-333344445555");
  auto* s = reinterpret_cast<LedgerSlot*>(bytes.data() + sizeof(SegmentHeader));
  for (std::uint32_t i = 0; i < slots; ++i) {
    if (rng() % 2 == 0) continue;
    s[i].owner = PackOwner(SlotState::kLive, 1 + rng() % kMaxPid, rng());
    s[i].charged = (rng() % 1000) * kPage;
    s[i].in_use = s[i].charged / 2;
    s[i].peak = s[i].charged;
    s[i].limit = rng() % 2 == 0 ? kNoLimit : (rng() % 30000) * kPage;
    std::strcpy(s[i].label.data(), "engine");
  }
  return bytes;
}

std::uint64_t Interesting(std::mt19937_64& rng, const SegmentHeader& h) {
  const std::uint64_t values[] = {0,
                                  1,
                                  ~0ULL,
                                  kMagic,
                                  kLayoutVersion,
                                  sizeof(SegmentHeader),
                                  sizeof(LedgerSlot),
                                  kMaxSlotCount,
                                  kMaxSlotCount + 1,
                                  h.gpu_total,
                                  h.gpu_total + 1,
                                  h.budget,
                                  h.budget + 1,
                                  kNoLimit,
                                  0x7fffffffffffffffULL,
                                  0x8000000000000000ULL,
                                  0xffffffffULL,
                                  PackOwner(SlotState::kInvalid, 5, 5),
                                  PackOwner(SlotState::kReclaiming, 0, 5),
                                  rng()};
  return values[rng() % std::size(values)];
}

void Mutate(std::vector<std::byte>& b, std::mt19937_64& rng) {
  const SegmentHeader h = *reinterpret_cast<const SegmentHeader*>(b.data());
  const int rounds = 1 + static_cast<int>(rng() % 4);
  for (int r = 0; r < rounds && !b.empty(); ++r) {
    switch (rng() % 7) {
      case 0: {  // flip bits
        const int n = 1 + static_cast<int>(rng() % 8);
        for (int i = 0; i < n; ++i) {
          b[rng() % b.size()] ^= static_cast<std::byte>(1U << (rng() % 8));
        }
        break;
      }
      case 1:    // an interesting word anywhere (aligned)
      case 2: {  // ... or in the header, to get past the first checks
        const std::size_t limit = (rng() % 7 == 2) ? sizeof(SegmentHeader) : b.size();
        if (limit < 8) break;
        const std::size_t off = (rng() % (limit / 8)) * 8;
        const std::uint64_t v = Interesting(rng, h);
        std::memcpy(b.data() + off, &v, 8);
        break;
      }
      case 3: {  // a 32-bit field of the header
        const std::size_t off = 8 + (rng() % 4) * 4;
        const auto v = static_cast<std::uint32_t>(Interesting(rng, h));
        std::memcpy(b.data() + off, &v, 4);
        break;
      }
      case 4:  // truncate or extend
        b.resize(rng() % 3 == 0 ? rng() % (b.size() + 1) : b.size() + rng() % 600,
                 static_cast<std::byte>(rng()));
        break;
      case 5: {  // random run of bytes
        const std::size_t off = rng() % b.size();
        const std::size_t len = std::min<std::size_t>(b.size() - off, 1 + rng() % 300);
        for (std::size_t i = 0; i < len; ++i) b[off + i] = static_cast<std::byte>(rng());
        break;
      }
      default: {  // a label or uuid without its NUL / with control bytes
        const std::size_t slots =
            (b.size() - std::min(b.size(), sizeof(SegmentHeader))) / sizeof(LedgerSlot);
        if (slots == 0) break;
        const std::size_t off = sizeof(SegmentHeader) + (rng() % slots) * sizeof(LedgerSlot) +
                                offsetof(LedgerSlot, label);
        std::memset(b.data() + off, static_cast<int>(rng() % 256), kLabelBytes);
        break;
      }
    }
  }
}

TEST(LedgerFuzz, AMillionMutatedSegmentsAreAcceptedOrRefusedWithAMessage) {
  const std::string path = "/dev/shm/kvcached_fuzz";
  std::mt19937_64 rng(std::random_device{}());
  const std::uint64_t seed = rng();
  rng.seed(seed);
  constexpr std::uint64_t kIterations = 1'000'000;
  std::uint64_t accepted = 0;
  std::uint64_t refused = 0;
  std::uint64_t slowest_ns = 0;
  const std::uint32_t slot_counts[] = {1, 2, 4, 8, 64};
  std::vector<std::byte> bytes;
  const auto start = std::chrono::steady_clock::now();
  for (std::uint64_t i = 0; i < kIterations; ++i) {
    if (i % 64 == 0 || bytes.size() < sizeof(SegmentHeader)) {
      bytes = ValidImage(slot_counts[rng() % std::size(slot_counts)], rng);
    }
    std::vector<std::byte> image = bytes;
    if (rng() % 200 == 0) {
      image.resize(rng() % 2048);
      for (auto& x : image) x = static_cast<std::byte>(rng());
    } else {
      Mutate(image, rng);
    }
    const auto t0 = std::chrono::steady_clock::now();
    auto r = ValidateSegment(image, path);
    const auto dt = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0)
            .count());
    slowest_ns = std::max(slowest_ns, dt);
    if (r.ok()) {
      ++accepted;
      ASSERT_GE(r.value().slot_count, 1U) << "seed " << seed << " iteration " << i;
      ASSERT_LE(r.value().budget, r.value().gpu_total);
      ASSERT_LE(SegmentBytes(r.value().slot_count), image.size());
    } else {
      ++refused;
      const std::string msg = r.status().message();
      ASSERT_NE(msg.find(path), std::string::npos)
          << "seed " << seed << " iteration " << i << ": " << msg;
      ASSERT_NE(msg.find("Fix:"), std::string::npos) << msg;
    }
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf(
      "fuzz: seed %llu, %llu images in %.1f s: %llu accepted, %llu refused, slowest "
      "validation %.1f us\n",
      static_cast<unsigned long long>(seed), static_cast<unsigned long long>(kIterations), secs,
      static_cast<unsigned long long>(accepted), static_cast<unsigned long long>(refused),
      static_cast<double>(slowest_ns) / 1e3);
  EXPECT_EQ(accepted + refused, kIterations);
  EXPECT_GT(accepted, 0U) << "mutations too destructive: nothing valid was ever produced";
  EXPECT_GT(refused, kIterations / 2);
  EXPECT_LT(slowest_ns, 50'000'000U) << "a validation took more than 50 ms";
}

TEST(LedgerFuzz, MutatedSegmentsInShmAreOpenedOrRefusedWithoutCrashing) {
  testing::ScopedSegmentName name("fuzzshm");
  std::mt19937_64 rng(std::random_device{}());
  int accepted = 0;
  int refused = 0;
  for (int i = 0; i < 300; ++i) {
    std::vector<std::byte> image = ValidImage(8, rng);
    Mutate(image, rng);
    // Keep the magic and a full header: those failures are covered above and wait 1 s each.
    if (image.size() < sizeof(SegmentHeader)) image.resize(sizeof(SegmentHeader));
    std::memcpy(image.data(), &kMagic, sizeof(kMagic));
    (void)Segment::Remove(name.name());
    const int fd = ::shm_open(("/" + name.name()).c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::write(fd, image.data(), image.size()), static_cast<ssize_t>(image.size()));
    ::close(fd);
    auto seg = Segment::Open(name.name(), Segment::Access::kReadOnly);
    if (seg.ok()) {
      ++accepted;
      const SegmentSnapshot snap = TakeSnapshot(*seg.value());  // must not read out of bounds
      EXPECT_LE(snap.slots.size(), seg.value()->slot_count());
    } else {
      ++refused;
      EXPECT_NE(seg.status().message().find(name.path()), std::string::npos)
          << seg.status().message();
    }
  }
  std::printf("shm fuzz: %d opened, %d refused\n", accepted, refused);
  EXPECT_EQ(accepted + refused, 300);
}

}  // namespace
}  // namespace kvcached::ledger
