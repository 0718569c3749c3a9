// The compiled part of fmt, built once into kvcached_core. Debian ships fmt only as a shared
// library, and the preloaded shim must not pull libfmt.so into the host process; compiling fmt
// header-only in every file instead costs seconds per translation unit.
#include <fmt/format-inl.h>  // defines fmt's out-of-line (FMT_FUNC) functions here
#include <fmt/format.h>

// Templates that format-inl.h defines but does not instantiate itself.
FMT_BEGIN_NAMESPACE
namespace detail {
template auto thousands_sep_impl<char>(locale_ref) -> thousands_sep_result<char>;
template auto decimal_point_impl<char>(locale_ref) -> char;
template void vformat_to<char>(buffer<char>&, basic_string_view<char>,
                               basic_format_args<buffer_context<char>>, locale_ref);
}  // namespace detail
FMT_END_NAMESPACE
