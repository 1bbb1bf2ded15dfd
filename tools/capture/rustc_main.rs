// Compiled under strace by tools/capture/capture.sh: expanding the macro prints rustc's maps.
maps_macro::print_maps!();
fn main() {}
