//! parallamr's prompt template and experiments CSV: `TEMPLATE NUL CSV` (without a NUL, the
//! input is the template, run against a small fixed CSV).
#![no_main]

use libfuzzer_sys::fuzz_target;

const CSV: &str = "provider,model,topic,name\nmock,m,cats,it's\ncommand,x,\"a;b\",$(x)\n";

fuzz_target!(|data: &[u8]| {
    let (template, csv) = fanout_fuzz::split_nul(data);
    let template = String::from_utf8_lossy(template);
    let csv = csv.map_or_else(|| CSV.into(), String::from_utf8_lossy);
    parallamr::fuzz::experiments(&template, &csv);
});
