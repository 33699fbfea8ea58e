use suspendware::*;
fn main() {
    let k: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(1);
    let n: usize = std::env::args().nth(2).map(|s| s.parse().unwrap()).unwrap_or(20000);
    let mut b = Pipeline::builder();
    for _ in 0..k {
        b = b.sync(|req: Request, next: &mut Next| next.get_response(req));
    }
    let p = b.view(|_r: Request| async { Response::new(Body::empty()) }).build().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let t = std::time::Instant::now();
        for _ in 0..n {
            let r = p.handle(Request::new(Body::empty())).await;
            std::hint::black_box(r);
        }
        eprintln!("{:?}/req", t.elapsed() / n as u32);
    });
}
