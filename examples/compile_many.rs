//! Compile a large spec repeatedly (for profiling the compiler with perf or callgrind):
//! `cargo run --release --example compile_many -- 200`.

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(100);
    let src = std::fs::read_to_string("specs/m2pt_image_point.graft").expect("run from the repository root");
    let src = src.replace("dim: 768, depth: 12, heads: 12", "dim: 1024, depth: 24, heads: 16");
    let mut nodes = 0;
    for _ in 0..n {
        let c = graft::api::compile_str(
            "m2pt.graft",
            Some(std::path::Path::new("specs")),
            &src,
            graft::pipeline::Mode::Infer,
        )
        .unwrap_or_else(|f| panic!("{}", graft::api::render_failure(&f, false)));
        nodes += c.graph.len();
    }
    println!("{nodes} nodes compiled");
}
