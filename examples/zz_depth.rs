use std::cell::Cell;
use suspendware::*;
thread_local! { static TOP: Cell<usize> = const { Cell::new(0) }; static LOW: Cell<usize> = const { Cell::new(usize::MAX) }; }
fn main() {
    let mut b = Pipeline::builder();
    for i in 0..5 {
        b = b.sync(move |req: Request, next: &mut Next| {
            let x = 0u8;
            let a = std::hint::black_box(&x) as *const u8 as usize;
            if i == 0 { TOP.with(|t| t.set(a)); }
            if i == 4 { LOW.with(|t| t.set(a)); }
            next.get_response(req)
        });
    }
    let p = b.view(|_r: Request| async { Response::new(Body::empty()) }).build().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(p.handle(Request::new(Body::empty())));
    let (t, l) = (TOP.with(|t| t.get()), LOW.with(|t| t.get()));
    println!("per layer: {} bytes", (t - l) / 4);
}
