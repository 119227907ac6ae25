use std::process::{Child, Command, Stdio};

use super::*;

const FIB_TRIE: &str = "Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 10.244.1.0/24 2 0 2
        |-- 10.244.1.0
           /24 link UNICAST
        |-- 10.244.1.5
           /32 host LOCAL
        |-- 10.244.1.255
           /32 link BROADCAST
Local:
  +-- 0.0.0.0/0 3 0 5
     |-- 10.244.1.5
        /32 host LOCAL
     +-- 127.0.0.0/8 2 0 2
        |-- 127.0.0.1
           /32 host LOCAL
";

#[test]
fn fib_trie_locals_are_the_host_local_entries() {
    let got = parse_fib_trie_locals(FIB_TRIE);
    assert_eq!(
        got,
        vec![Ipv4Addr::new(10, 244, 1, 5), Ipv4Addr::new(127, 0, 0, 1)],
        "broadcast and routes are not local"
    );
}

#[test]
fn if_inet6_addresses() {
    let text = "fd000000000000000000000000000005 02 40 00 80     eth0\n00000000000000000000000000000001 01 80 10 80       lo\nshort 01 80 10 80 x\n";
    assert_eq!(parse_if_inet6(text), vec!["fd00::5".parse::<Ipv6Addr>().unwrap(), Ipv6Addr::LOCALHOST]);
}

#[test]
fn no_address_is_an_error() {
    assert!(matches!(find_pod_netns(Path::new("/proc"), &[]), Err(ProcNetnsError::NoAddress)));
}

/// A network namespace made by the test, with one process in it; removed on drop.
struct TestNetns {
    name: String,
    process: Child,
}

impl TestNetns {
    fn new(v4: Ipv4Addr, v6: Ipv6Addr) -> TestNetns {
        let name = format!("zt-procns-{}-{}", std::process::id(), rand::random::<u32>());
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("run ip");
            assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        ip(&["netns", "add", &name]);
        let mut guard =
            TestNetns { name: name.clone(), process: Command::new("true").spawn().expect("placeholder process") };
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        ip(&["-n", &name, "addr", "add", &format!("{v4}/32"), "dev", "lo"]);
        ip(&["-n", &name, "addr", "add", &format!("{v6}/128"), "dev", "lo", "nodad"]);
        let process = Command::new("ip")
            .args(["netns", "exec", &name, "sleep", "30"])
            .stdin(Stdio::null())
            .spawn()
            .expect("start a process in the namespace");
        let mut placeholder = std::mem::replace(&mut guard.process, process);
        let _ = placeholder.wait();
        guard
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// Polls `f` (bounded: 5 s) until it answers something.
fn wait_for<T>(mut f: impl FnMut() -> Option<T>) -> Option<T> {
    for _ in 0..250 {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    None
}

fn random_addresses() -> (Ipv4Addr, Ipv6Addr) {
    let r: u32 = rand::random();
    // 198.18.0.0/15 (benchmarking) and a ULA: only ever inside this test's namespace.
    let v4 = Ipv4Addr::new(198, 18 + (r >> 24 & 1) as u8, (r >> 8) as u8, (r as u8).max(1));
    let v6 = Ipv6Addr::new(0xfd7a, 0x7e57, (r >> 16) as u16, r as u16, 0, 0, 0, 5);
    (v4, v6)
}

#[test]
fn finds_the_namespace_that_holds_the_pod_address_and_never_the_hosts() {
    if !crate::test_skip::require_root(
        "finds_the_namespace_that_holds_the_pod_address_and_never_the_hosts",
        "creates network namespaces",
    ) {
        return;
    }
    let (v4, v6) = random_addresses();
    let ns = TestNetns::new(v4, v6);
    let want = std::fs::metadata(ns.path()).unwrap().ino();
    let proc_root = Path::new("/proc");
    let found = wait_for(|| find_pod_netns(proc_root, &[IpAddr::V4(v4)]).ok())
        .unwrap_or_else(|| panic!("the process in {} holding {v4} was not found", ns.name));
    assert_eq!(found.inode, want, "found {found:?}, not the namespace {} holding {v4}", ns.name);
    assert_eq!(
        std::fs::metadata(&found.path).unwrap().ino(),
        want,
        "{} is not a path to that namespace",
        found.path.display()
    );
    let by_v6 = find_pod_netns(proc_root, &[IpAddr::V6(v6)]).expect("found by its IPv6 address");
    assert_eq!(by_v6.inode, want);
    assert_eq!(process_in_netns(proc_root, &ns.path()).unwrap(), found.pid, "the oldest process of the namespace");
    assert!(cgroup_of(proc_root, found.pid).is_ok());

    // The host's namespace holds 127.0.0.1 (and so does the test's): never chosen.
    let host = host_inodes(proc_root).unwrap();
    match find_pod_netns(proc_root, &[IpAddr::V4(Ipv4Addr::LOCALHOST)]) {
        Ok(f) => assert!(!host.contains(&f.inode), "the host's namespace was chosen"),
        Err(e) => assert!(matches!(e, ProcNetnsError::NotFound { .. } | ProcNetnsError::Ambiguous { .. }), "{e}"),
    }
    drop(ns);
    let gone = find_pod_netns(proc_root, &[IpAddr::V4(v4)]);
    assert!(matches!(gone, Err(ProcNetnsError::NotFound { .. })), "after the namespace is gone: {gone:?}");
}

#[test]
fn an_address_held_by_two_namespaces_is_never_guessed() {
    if !crate::test_skip::require_root(
        "an_address_held_by_two_namespaces_is_never_guessed",
        "creates network namespaces",
    ) {
        return;
    }
    let (v4, v6) = random_addresses();
    let (_, other_v6) = random_addresses();
    let pod = TestNetns::new(v4, v6);
    let proc_root = Path::new("/proc");
    let both = [IpAddr::V4(v4), IpAddr::V6(v6)];
    let found = wait_for(|| find_pod_netns(proc_root, &both).ok()).expect("the pod's namespace holds both addresses");
    assert_eq!(found.inode, std::fs::metadata(pod.path()).unwrap().ino());

    // Another namespace takes the pod's IPv4 address (a pod with NET_ADMIN could). By that
    // address alone two namespaces match (once the impostor's process is in its namespace):
    // the search refuses to guess.
    let impostor = TestNetns::new(v4, other_v6);
    let alone = wait_for(|| match find_pod_netns(proc_root, &[IpAddr::V4(v4)]) {
        Err(ProcNetnsError::Ambiguous { paths, .. }) => Some(paths),
        _ => None,
    })
    .unwrap_or_else(|| panic!("{} and {} both hold {v4}: the search must refuse", pod.name, impostor.name));
    assert_eq!(alone.len(), 2, "{alone:?}");
    // The impostor holds only one of the pod's addresses: by both, the pod's namespace is found.
    let still = find_pod_netns(proc_root, &both).expect("the namespace holding every address");
    assert_eq!(still.inode, found.inode, "the namespace holding only one of the addresses was chosen");
}
