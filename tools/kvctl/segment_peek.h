// A look at a segment file before opening it as a ledger, so that no kvctl command waits for a
// creator that is still at it (Segment::Open gives one 1 s) or calls a segment of another kvcached
// version "corrupt": one open (O_NOFOLLOW, non-blocking), fstat and a read of the header.
#pragma once

#include <sys/stat.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "core/ledger/ledger_layout.h"

namespace kvctl {

// A creator finishes a segment within microseconds; one unfinished for longer than this died.
inline constexpr std::chrono::seconds kUnfinishedGrace{5};

struct HeaderPeek {
  bool opened = false;    // false: Segment::Open reports why (missing, permission denied)
  bool regular = false;   // a regular file
  bool finished = false;  // the header is there and its magic published
  struct stat st {};
  std::optional<kvcached::ledger::SegmentHeader> header;  // when finished
};

HeaderPeek PeekHeader(const std::string& path);

// The layout version of a finished kvcached segment when it is not the one this kvctl reads.
std::optional<std::uint32_t> OtherLayoutVersion(const HeaderPeek& peek);

// What `kvctl list` and the others say about a segment of layout `version`, with the fix.
std::string OtherVersionMessage(const std::string& path, const std::string& name,
                                std::uint32_t version);

}  // namespace kvctl
