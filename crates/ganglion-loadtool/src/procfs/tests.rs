use super::{Process, child_named, stat_cpu_ticks, stat_name, stat_parent, status_kib, tree_cpu_seconds};

#[test]
fn status_lines_are_read_in_kib() {
    let status = "Name:\tganglion\nVmHWM:\t  120400 kB\nVmRSS:\t   98304 kB\nThreads:\t4\n";
    assert_eq!(status_kib(status, "VmRSS:"), Some(98304));
    assert_eq!(status_kib(status, "VmHWM:"), Some(120400));
    assert_eq!(status_kib(status, "VmSwap:"), None);
}

#[test]
fn stat_fields_count_from_the_end_of_the_command_name() {
    let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 9 0 100";
    assert_eq!(stat_cpu_ticks(stat), Some(325));
    assert_eq!(stat_parent(stat), Some(1));
    assert_eq!(stat_name(stat), Some("tokio (rt) x"));
}

#[test]
fn this_process_can_be_read() {
    assert!(Process::This.rss_bytes().unwrap() > 0);
    assert!(Process::This.cpu_seconds().is_some());
}

#[test]
fn a_process_tree_includes_its_root() {
    assert!(tree_cpu_seconds(std::process::id()).is_some());
    assert!(tree_cpu_seconds(u32::MAX).is_none());
}

#[test]
fn a_child_is_found_by_its_command_name() {
    let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    let found = child_named(std::process::id(), "sleep");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(found, Some(child.id()));
    assert_eq!(child_named(std::process::id(), "no-such-command"), None);
}
