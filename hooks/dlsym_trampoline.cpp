// dlsym interposer.
//
// Libraries that reach CUDA through dlopen + dlsym (a statically linked cudart, PyTorch's driver
// table, CuPy) never bind to our exported cudaMalloc/cuMemAlloc: they ask dlsym for an address
// inside a specific library. So we export dlsym too, and for the names we interpose, looked up
// in a specific handle, answer with our hook.
//
// Why assembly: glibc resolves dlsym(RTLD_NEXT, ...) -- and the namespace of RTLD_DEFAULT -- from
// the *caller's return address*. A C++ wrapper that called the real dlsym from its own frame
// would make every RTLD_NEXT lookup in the process relative to libkvcached_shim.so instead of to
// the library that asked. That silently changes which definition it finds, and an interposer
// loaded after us that uses dlsym(RTLD_NEXT, "x") to find the next "x" would get itself back
// and recurse forever. The trampoline therefore:
//   1. saves the two arguments and calls kvcached_dlsym_filter(handle, name, return address);
//   2. if the filter returns a hook, returns it;
//   3. otherwise restores the arguments and the stack exactly as the caller left them and
//      *jumps* (not calls) to the real dlsym, which then sees the caller's return address.
#include <dlfcn.h>

#include "hooks/hook_table.h"
#include "hooks/real_dlsym.h"

// The C++ half of the trampoline: decides whether this lookup gets our hook. Returns null to
// forward the call unchanged. Runs before the real dlsym; must also make sure that
// kvcached_real_dlsym is set, because the trampoline jumps through it right after.
extern "C" __attribute__((visibility("hidden"), used)) void* kvcached_dlsym_filter(
    void* handle, const char* name, const void* caller) noexcept {
  (void)kvcached::hooks::RealDlsym();
  // RTLD_DEFAULT and RTLD_NEXT already find our exported definitions (the shim comes first in the
  // global scope) or deliberately skip them; only a specific handle needs our answer.
  if (handle == RTLD_DEFAULT || handle == RTLD_NEXT || name == nullptr) return nullptr;
  return kvcached::hooks::HookForDlsym(handle, name, caller);
}

// dlsym and its hidden alias kvcached_dlsym_trampoline (used to recognise our own definition).
#if defined(__x86_64__)
asm(R"(
  .text
  .globl dlsym
  .type dlsym, @function
  .globl kvcached_dlsym_trampoline
  .hidden kvcached_dlsym_trampoline
  .type kvcached_dlsym_trampoline, @function
  .p2align 4
dlsym:
kvcached_dlsym_trampoline:
  .cfi_startproc
  endbr64
  movq (%rsp), %rdx              # 3rd argument: the caller's return address
  pushq %rdi                     # save handle and name; 3 pushes keep the stack 16-byte aligned
  .cfi_adjust_cfa_offset 8
  pushq %rsi
  .cfi_adjust_cfa_offset 8
  subq $8, %rsp
  .cfi_adjust_cfa_offset 8
  call kvcached_dlsym_filter
  addq $8, %rsp
  .cfi_adjust_cfa_offset -8
  popq %rsi
  .cfi_adjust_cfa_offset -8
  popq %rdi
  .cfi_adjust_cfa_offset -8
  testq %rax, %rax
  jnz 1f
  jmpq *kvcached_real_dlsym(%rip)  # tail jump: the caller's return address is on top again
1:
  ret
  .cfi_endproc
  .size dlsym, .-dlsym
  .size kvcached_dlsym_trampoline, .-kvcached_dlsym_trampoline
)");
#elif defined(__aarch64__)
asm(R"(
  .text
  .globl dlsym
  .type dlsym, %function
  .globl kvcached_dlsym_trampoline
  .hidden kvcached_dlsym_trampoline
  .type kvcached_dlsym_trampoline, %function
  .p2align 2
dlsym:
kvcached_dlsym_trampoline:
  .cfi_startproc
  hint #34                       // bti c
  stp x29, x30, [sp, #-32]!
  .cfi_def_cfa_offset 32
  .cfi_offset 29, -32
  .cfi_offset 30, -24
  mov x29, sp
  stp x0, x1, [sp, #16]          // save handle and name
  mov x2, x30                    // 3rd argument: the caller's return address
  bl kvcached_dlsym_filter
  mov x9, x0
  ldp x0, x1, [sp, #16]
  ldp x29, x30, [sp], #32        // x30 = the caller's return address again
  .cfi_restore 29
  .cfi_restore 30
  .cfi_def_cfa_offset 0
  cbnz x9, 1f
  adrp x16, kvcached_real_dlsym
  ldr x16, [x16, #:lo12:kvcached_real_dlsym]
  br x16                         // tail jump (x16 is a valid BTI "call" target register)
1:
  mov x0, x9
  ret
  .cfi_endproc
  .size dlsym, .-dlsym
  .size kvcached_dlsym_trampoline, .-kvcached_dlsym_trampoline
)");
#else
#error "kvcached: the dlsym trampoline supports x86_64 and aarch64 only"
#endif
