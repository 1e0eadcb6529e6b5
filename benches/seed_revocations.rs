//! Fills a sled store with synthetic revocations so the load bench can measure
//! a gateway holding a large revocation list. Not a benchmark itself:
//!
//!   cargo bench --bench seed_revocations -- STORE_DIR COUNT

use std::path::Path;
use std::process::ExitCode;

use gatehouse::store::SledStore;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let [dir, count] = args.as_slice() else {
        eprintln!("usage: cargo bench --bench seed_revocations -- STORE_DIR COUNT");
        return ExitCode::FAILURE;
    };
    let Ok(count) = count.parse::<usize>() else {
        eprintln!("COUNT must be a number");
        return ExitCode::FAILURE;
    };
    let result = SledStore::open(Path::new(dir)).and_then(|store| {
        store.import_revocations((0..count).map(|i| (format!("seeded-revocation-{i:012}"), u64::MAX)))
    });
    match result {
        Ok(n) => {
            eprintln!("{n} revocations written to {dir}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("seeding failed: {e}");
            ExitCode::FAILURE
        }
    }
}
