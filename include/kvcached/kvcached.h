/* kvcached shim C API.
 *
 * Plain C, no exceptions cross it, safe to call through ctypes. Every function returns a
 * kvcached_status; on failure kvcached_last_error() gives a human-readable message for the
 * calling thread (naming the failing driver call, variable or argument).
 *
 * Addresses are device virtual addresses (the value cudaMalloc would return), passed as
 * uint64_t so that Python's ctypes and C++ callers agree on width.
 */
#ifndef KVCACHED_KVCACHED_H
#define KVCACHED_KVCACHED_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KVCACHED_API __attribute__((visibility("default")))
#define KVCACHED_API_VERSION 1

typedef enum kvcached_status {
  KVCACHED_OK = 0,
  KVCACHED_ERR_INVALID = 1,     /* bad argument (null, out of range, unknown address) */
  KVCACHED_ERR_NO_MEMORY = 2,   /* budget refused or the driver is out of memory: retry later */
  KVCACHED_ERR_DRIVER = 3,      /* a driver call failed (kvcached_last_error names it) */
  KVCACHED_ERR_NOT_FOUND = 4,   /* no region at that address */
  KVCACHED_ERR_DISABLED = 5,    /* ENABLE_KVCACHED=false, or the shim could not start */
  KVCACHED_ERR_STATE = 6,       /* operation not valid in the current state (e.g. release of a
                                   range that was never acquired) */
  KVCACHED_ERR_UNSUPPORTED = 7, /* device lacks virtual memory management */
  KVCACHED_ERR_INTERNAL = 8     /* a bug or unexpected failure inside kvcached (not a lack of
                                   memory): kvcached_last_error says what */
} kvcached_status;

typedef enum kvcached_region_kind {
  KVCACHED_REGION_LAZY = 0, /* reserved VA, zero-page aliased, backed on acquire */
  KVCACHED_REGION_EAGER = 1 /* fully backed at creation (budgeted and cappable) */
} kvcached_region_kind;

typedef enum kvcached_page_state {
  KVCACHED_PAGE_ZERO = 0,        /* aliased to the shared zero memory */
  KVCACHED_PAGE_MAPPED_FREE = 1, /* real page mapped ahead, not in use */
  KVCACHED_PAGE_IN_USE = 2       /* engine holds at least one acquired range in it */
} kvcached_page_state;

typedef struct kvcached_range {
  uint64_t addr;
  uint64_t length;
} kvcached_range;

typedef struct kvcached_region_info {
  uint64_t base;
  uint64_t size; /* bytes of VA reserved (multiple of page_size) */
  uint64_t page_size;
  uint64_t pages;
  uint64_t zero_pages;
  uint64_t mapped_free_pages;
  uint64_t in_use_pages;
  int32_t device;
  int32_t kind; /* kvcached_region_kind */
} kvcached_region_info;

typedef struct kvcached_stats {
  uint64_t page_size;
  uint64_t regions;
  uint64_t reserved_va_bytes; /* VA of all regions */
  uint64_t in_use_bytes;      /* physical bytes in IN_USE pages and eager regions */
  uint64_t mapped_free_bytes; /* physical bytes mapped ahead in lazy regions */
  uint64_t pool_bytes;        /* physical bytes held unmapped, ready to map */
  uint64_t zero_page_bytes;   /* the shared zero memory (KVCACHED_ZERO_CHUNK_MB) */
  uint64_t peak_physical_bytes;
  uint64_t passthrough_bytes;  /* allocations the shim passed to the real allocator */
  uint64_t budget_limit_bytes; /* what this process may hold (its limit or the GPU budget) */
  uint64_t maps;               /* pages swapped in (zero -> real) since start */
  uint64_t unmaps;             /* pages swapped out (real -> zero) since start */
  uint64_t sync_maps;          /* swaps done on the caller's thread (a map-ahead miss) */
  uint64_t budget_refusals;
} kvcached_stats;

/* ---- identity ---- */
KVCACHED_API const char* kvcached_version(void);
KVCACHED_API int kvcached_api_version(void);
KVCACHED_API const char* kvcached_status_string(kvcached_status status);
/* Message of the last failure on this thread ("" if none). Valid until the next call. */
KVCACHED_API const char* kvcached_last_error(void);
/* 1 when the shim is enabled and started (starting it if needed), 0 otherwise. */
KVCACHED_API int kvcached_enabled(void);

/* ---- regions ---- */
KVCACHED_API kvcached_status kvcached_region_create(int device, uint64_t size,
                                                    kvcached_region_kind kind, uint64_t* out_base);
KVCACHED_API kvcached_status kvcached_region_destroy(uint64_t base);
KVCACHED_API kvcached_status kvcached_region_info_get(uint64_t addr, kvcached_region_info* out);

/* Back [addr, addr+length) with physical pages. Pages are reference counted: a page that two
 * acquired ranges share stays IN_USE until both are released. All or nothing: on failure no
 * page changed state. KVCACHED_ERR_NO_MEMORY means "not now" (budget), not a crash. */
KVCACHED_API kvcached_status kvcached_acquire(uint64_t addr, uint64_t length);
KVCACHED_API kvcached_status kvcached_release(uint64_t addr, uint64_t length);
/* Batched forms: one call per engine step. All or nothing for acquire. */
KVCACHED_API kvcached_status kvcached_acquire_ranges(const kvcached_range* ranges, size_t count);
KVCACHED_API kvcached_status kvcached_release_ranges(const kvcached_range* ranges, size_t count);

KVCACHED_API kvcached_status kvcached_page_state_get(uint64_t addr, kvcached_page_state* out);

/* ---- pool and stats ---- */
KVCACHED_API kvcached_status kvcached_stats_get(int device, kvcached_stats* out);
/* Bytes this process could back now on `device` without a budget refusal: what the budget still
 * admits, min(its limit - what it holds, GPU budget - what all processes hold) saturating at 0,
 * plus its own reserve (unmapped pages and pages mapped ahead), which an acquire takes before it
 * is refused. Non-binding: another process may take the room first, and the driver may still be
 * out of memory. For an engine refused a while ago, to learn cheaply whether memory came back:
 * no allocation, no log line, no refusal or pressure recorded (one pass over the ledger's slots).
 * A device this process has not used yet: 0 (its budget is not attached until first use).
 * Errors: KVCACHED_ERR_INVALID for a NULL `bytes` or a negative device, KVCACHED_ERR_DISABLED
 * when kvcached is not running. */
KVCACHED_API kvcached_status kvcached_budget_headroom_get(int device, uint64_t* bytes);
/* Give back now every physical page not in use on this device (pool and mapped-ahead); each KV
   region maps no page ahead again until its next acquire (for an engine going idle). */
KVCACHED_API kvcached_status kvcached_trim(int device);

/* Pressure on this device's shared budget: *seq grows with every request made by a process that
 * was refused memory, *pid is the process that made the latest one. An engine that sees *seq
 * change with a pid other than its own should give back memory only it can free (cached blocks),
 * so that memory flows to the busy neighbour. Either pointer may be NULL. */
KVCACHED_API kvcached_status kvcached_pressure_get(int device, uint64_t* seq, int32_t* pid);

/* ---- interposition policy (issue: interposition) ---- */
/* Per-thread KV window: allocations of at least one page made by this thread between begin and
 * end through cudaMalloc/cuMemAlloc become lazy regions. Windows nest. */
KVCACHED_API kvcached_status kvcached_kv_window_begin(void);
KVCACHED_API kvcached_status kvcached_kv_window_end(void);
/* Label shown by kvctl for this process (engine name). */
KVCACHED_API kvcached_status kvcached_set_label(const char* label);

/* What cudaMemGetInfo / cuMemGetInfo report in this process from now on (overrides
 * KVCACHED_VIRTUAL_MEMINFO; docs/configuration.md describes the modes). */
typedef enum kvcached_meminfo_mode {
  KVCACHED_MEMINFO_REAL = 0,    /* the driver's values (KVCACHED_VIRTUAL_MEMINFO=real or false) */
  KVCACHED_MEMINFO_PROCESS = 1, /* total = this process's limit, free = total - what it allocated;
                                   other processes never change it
                                   (KVCACHED_VIRTUAL_MEMINFO=process or true) */
  KVCACHED_MEMINFO_SHARED = 2   /* total = this process's limit, free = what the shared GPU budget
                                   still grants it after every other process's charge
                                   (KVCACHED_VIRTUAL_MEMINFO=shared) */
} kvcached_meminfo_mode;
KVCACHED_API kvcached_status kvcached_set_meminfo_mode(int mode);

/* PyTorch torch.cuda.memory.CUDAPluggableAllocator entry points. Requests of at least one page
 * become lazy regions; smaller ones go to the real allocator. Stream is a cudaStream_t. */
KVCACHED_API void* kvcached_torch_malloc(ssize_t size, int device, void* stream);
KVCACHED_API void kvcached_torch_free(void* ptr, ssize_t size, int device, void* stream);

/* ---- fairness between engines sharing one GPU budget (docs/sharing.md) ---- */
typedef enum kvcached_share_action {
  KVCACHED_SHARE_OK = 0,             /* at or below its fair share, or nobody starved: carry on */
  KVCACHED_SHARE_STOP_ADMITTING = 1, /* above its share while an engine below its own is refused:
                                        report no free blocks for new admissions */
  KVCACHED_SHARE_GIVE_CACHED = 2,    /* and free cached (prefix) blocks worth give_bytes */
  KVCACHED_SHARE_PREEMPT = 3         /* the refused engine waited past KVCACHED_SHARE_PREEMPT_MS:
                                        preempt own newest requests until give_bytes are freed */
} kvcached_share_action;

typedef struct kvcached_share_verdict {
  int32_t action;            /* kvcached_share_action */
  int32_t starved_pid;       /* the longest-starved engine (0 when none) */
  uint64_t give_bytes;       /* what to give back (whole pages) */
  uint64_t fair_share_bytes; /* this engine's fair share now */
  uint64_t held_bytes;       /* what it holds (in use + reserved) */
  uint64_t deficit_bytes;    /* what the starved engines lack of their shares, together */
  uint64_t starved_ms;       /* how long the longest-starved engine has been refused */
  uint64_t weight_milli;     /* this engine's weight x 1000 */
  uint64_t min_bytes;        /* its guaranteed minimum */
} kvcached_share_verdict_t;

/* What the sharing policy asks of this process on `device` now. Cheap enough for every engine
 * step (reads the ledger: one pass over its slots). A process-local budget always says OK. */
KVCACHED_API kvcached_status kvcached_share_verdict(int device, kvcached_share_verdict_t* out);
/* The verdict's action alone (a kvcached_share_action), for asking every step: while no other
 * engine on the device is refused below its share (nearly always), one read of the ledger
 * header's starved mask and no fair-share arithmetic; kvcached_share_verdict for the rest when it
 * is not OK. */
KVCACHED_API kvcached_status kvcached_share_action_get(int device, int32_t* action);
/* The engine gave back `bytes` and preempted `requests` because the verdict asked (shown by
 * kvctl list and kvctl metrics). */
KVCACHED_API kvcached_status kvcached_share_report(int device, uint64_t bytes, uint64_t requests);
/* The smallest amount of KV memory the engine takes or gives at a time on `device`, in bytes
 * (e.g. a vLLM engine: one page in every KV tensor = pages per unit x page size); 0 = one page,
 * the default. Its fair share is then reachable in whole units: it is starved only while it lacks
 * at least one unit, and it is asked to give whole units. Whole pages, at most the GPU budget
 * (else KVCACHED_ERR_INVALID). Call once, when the KV cache is made. Shown by kvctl list --json
 * (share_unit_bytes). */
KVCACHED_API kvcached_status kvcached_share_set_unit(int device, uint64_t unit_bytes);

/* ---- engine hook statistics (docs/metrics.md) ---- */
/* Publishes the engine hook's cumulative totals for this process on `device`: engine steps seen,
 * nanoseconds spent inside the hook over them, and kvcached C API calls the hook made over them.
 * Shown from outside the engine by `kvctl list` (hook us/step), `kvctl list --json`
 * (engine_steps, engine_hook_ns, engine_hook_c_calls) and `kvctl metrics`
 * (kvcached_process_engine_*_total counters).
 *
 * Totals, not increments: the last call wins. Keep them monotonic (Prometheus treats a smaller
 * value as a counter reset); a smaller value is stored as given. Cheap (three relaxed stores into
 * this process's ledger slot): call it every step or every few steps. Totals 0/0/0 read as "never
 * reported". With a process-local budget (no shared ledger) nothing is kept and KVCACHED_OK is
 * returned. Errors: KVCACHED_ERR_INVALID for a device that does not exist, KVCACHED_ERR_DISABLED
 * when kvcached is not running. Returns a kvcached_status (an int through ctypes). */
KVCACHED_API kvcached_status kvcached_report_engine_steps(int device, uint64_t steps,
                                                          uint64_t hook_ns, uint64_t c_calls);

#ifdef __cplusplus
}
#endif

#endif /* KVCACHED_KVCACHED_H */
