use super::*;
use crate::kubernetes::rules::{DATAPLANE_MODE_LABEL, SkipReason};

fn map(pairs: &[(&str, &str)]) -> Map {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn running(name: &str) -> PodView {
    PodView {
        key: PodKey { namespace: "shop".into(), name: name.into() },
        kube_uid: format!("uid-{name}"),
        ips: vec!["10.244.1.5".parse().unwrap()],
        phase: "Running".into(),
        ..PodView::default()
    }
}

fn ambient() -> Map {
    map(&[(DATAPLANE_MODE_LABEL, "ambient")])
}

#[test]
fn wants() {
    let scope = EnrollmentScope::default();
    let pod = running("web");
    assert_eq!(want(&pod, Some(&ambient()), &scope), Want::Enrolled);
    assert_eq!(want(&pod, None, &scope), Want::NotEnrolled(SkipReason::NotAmbient));
    let pending = PodView { ips: vec![], phase: "Pending".into(), ..running("web") };
    assert_eq!(want(&pending, Some(&ambient()), &scope), Want::Wait, "no address yet: wait");
    let done = PodView { phase: "Succeeded".into(), ..running("job") };
    assert_eq!(want(&done, Some(&ambient()), &scope), Want::Finished);
    let opted_out = PodView { labels: map(&[(DATAPLANE_MODE_LABEL, "none")]), ..running("web") };
    assert_eq!(want(&opted_out, Some(&ambient()), &scope), Want::NotEnrolled(SkipReason::PodOptOut("none".into())));
    let host = PodView { host_network: true, ..running("web") };
    assert_eq!(want(&host, Some(&ambient()), &scope), Want::NotEnrolled(SkipReason::HostNetwork));
}

#[test]
fn steps() {
    let pod = running("web");
    let annotated = PodView { annotations: map(&[(REDIRECTION_ANNOTATION, "enabled")]), ..running("web") };
    let held = Held { kube_uid: Some("uid-web".into()) };
    let unknown = Held { kube_uid: None };
    let other = Held { kube_uid: Some("uid-old".into()) };
    let skip = Want::NotEnrolled(SkipReason::NotAmbient);
    // (case, pod, want, held, annotation pending, expected step)
    type Case<'a> = (&'a str, &'a PodView, Want, Option<&'a Held>, Option<bool>, Step);
    let cases: &[Case<'_>] = &[
        ("new ambient pod", &pod, Want::Enrolled, None, None, Step::Enroll),
        ("enrolled, not yet annotated", &pod, Want::Enrolled, Some(&held), None, Step::Annotate),
        ("annotation patched, watch not caught up", &pod, Want::Enrolled, Some(&held), Some(true), Step::Nothing),
        ("enrolled and annotated", &annotated, Want::Enrolled, Some(&held), None, Step::Nothing),
        ("re-adopted after a restart", &annotated, Want::Enrolled, Some(&unknown), None, Step::Nothing),
        ("same name, new pod", &annotated, Want::Enrolled, Some(&other), None, Step::Release),
        ("label removed", &annotated, skip.clone(), Some(&held), None, Step::Release),
        ("released, annotation left", &annotated, skip.clone(), None, None, Step::RemoveAnnotation),
        ("removal patched, watch not caught up", &annotated, skip.clone(), None, Some(false), Step::Nothing),
        ("never ambient", &pod, skip.clone(), None, None, Step::Nothing),
        ("finished", &annotated, Want::Finished, Some(&held), None, Step::Release),
        ("waiting keeps a plugin-enrolled pod", &pod, Want::Wait, Some(&unknown), None, Step::Nothing),
        ("waiting enrolls nothing", &pod, Want::Wait, None, None, Step::Nothing),
    ];
    for (name, pod, want, held, pending, step) in cases {
        assert_eq!(next_step(pod, want, *held, *pending), *step, "{name}");
    }
}

#[test]
fn workload_uids_round_trip() {
    let key = PodKey { namespace: "shop".into(), name: "web-0".into() };
    let uid = key.workload_uid("Kubernetes");
    assert_eq!(uid.as_str(), "Kubernetes//Pod/shop/web-0");
    assert_eq!(PodKey::from_workload_uid(&uid), Some(key));
    assert_eq!(PodKey::from_workload_uid(&WorkloadUid::from("cluster1//v1/Pod/shop/web-0".to_string())), None);
    assert_eq!(PodKey::from_workload_uid(&WorkloadUid::from("c//Pod/shop".to_string())), None);
}

#[test]
fn retry_delays_grow_are_capped_and_jittered() {
    assert_eq!(retry_delay(1, 0.5), FIRST_RETRY_DELAY);
    assert_eq!(retry_delay(2, 0.5), FIRST_RETRY_DELAY * 2);
    assert_eq!(retry_delay(40, 0.5), MAX_RETRY_DELAY);
    assert_eq!(retry_delay(1, 0.0), FIRST_RETRY_DELAY.mul_f64(0.8));
    assert!(retry_delay(40, 0.999) <= MAX_RETRY_DELAY.mul_f64(1.2));
}

#[test]
fn pod_view_reads_the_object() {
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "shop", "uid": "u1", "labels": {"app": "web"}},
        "spec": {"containers": [], "hostNetwork": true},
        "status": {"phase": "Running", "podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}]}
    }))
    .unwrap();
    let view = PodView::from_pod(&pod).unwrap();
    assert_eq!(view.key.to_string(), "shop/web");
    assert!(view.host_network);
    assert_eq!(view.ips, vec!["10.0.0.1".parse::<IpAddr>().unwrap(), "fd00::1".parse().unwrap()]);
    let only_ip: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "shop"}, "status": {"podIP": "10.0.0.2"}
    }))
    .unwrap();
    assert_eq!(PodView::from_pod(&only_ip).unwrap().ips, vec!["10.0.0.2".parse::<IpAddr>().unwrap()]);
}
