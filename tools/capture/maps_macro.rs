// A procedural macro that prints the compiler's own /proc/self/maps (it runs inside rustc).
extern crate proc_macro;
use proc_macro::TokenStream;

#[proc_macro]
pub fn print_maps(_: TokenStream) -> TokenStream {
    print!("{}", std::fs::read_to_string("/proc/self/maps").unwrap());
    TokenStream::new()
}
