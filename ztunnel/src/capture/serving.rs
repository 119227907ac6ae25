//! The steps of capturing, serving and releasing one pod, each with its own undo.
//!
//! Capturing puts the pod in `pod_config` with `POD_READY` clear and attaches its programs:
//! from then on its traffic goes to ztunnel or is refused. Serving binds its listeners in its
//! namespace, registers its 15006 sockets and sets `POD_READY`; a failed serve leaves the pod
//! captured with `POD_READY` clear, never uncaptured. A pod's exclusions (Istio's annotations)
//! go into the maps when it is captured and leave with it. Only [`Capture::tear_down`] (unenroll,
//! or a pod proven gone) removes the pod from the maps.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use tracing::warn;

use super::maps::{IpKey, PodConfig};
use super::netns::NetnsWorker;
use super::records::{EnrollRecord, pod_key};
use super::sockets::{MapOrigDst, PodListenerSet, PodSockets};
use super::{Capture, CaptureError, io_err, reply_routing, warn_no_reply_routing};
use crate::proxy::pod::{PodContext, PodProxy};
use crate::state::CaptureExclusions;

/// The first IPv4 and the first IPv6 address of `ips`.
fn families(ips: &[IpAddr]) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
    let ip4 = ips.iter().find_map(|ip| match ip {
        IpAddr::V4(v4) => Some(*v4),
        IpAddr::V6(_) => None,
    });
    let ip6 = ips.iter().find_map(|ip| match ip {
        IpAddr::V6(v6) => Some(*v6),
        IpAddr::V4(_) => None,
    });
    (ip4, ip6)
}

impl Capture {
    /// Captures a newly enrolled pod: its exclusions in the maps, `pod_config` refusing,
    /// programs attached, record saved. On failure nothing of it is left.
    pub(super) fn capture_pod(
        &self,
        record: &EnrollRecord,
        exclusions: &CaptureExclusions,
    ) -> Result<(), CaptureError> {
        let applied = self.loaded.exclusions.lock().unwrap_or_else(|e| e.into_inner()).apply(
            record.netns_cookie,
            &record.ips,
            exclusions,
        );
        if let Err(e) = applied {
            self.forget_maps(record);
            return Err(CaptureError::Map { uid: record.uid.to_string(), reason: e.to_string() });
        }
        if let Err(e) = self.set_pod_ready(record, false) {
            self.forget_maps(record);
            return Err(e);
        }
        let opened = File::open(&record.cgroup)
            .map_err(io_err("opening cgroup", &record.cgroup))
            .and_then(|cg| Ok((cg, File::open(&record.netns).map_err(io_err("opening netns", &record.netns))?)));
        let attached = opened.and_then(|(cg, ns)| Ok(self.loaded.attach_pod(&pod_key(&record.uid), &cg, &ns)?));
        if let Err(e) = attached {
            self.forget_maps(record);
            return Err(e);
        }
        if let Err(e) = self.records.save(record) {
            warn!(uid = record.uid.as_str(), error = %e, "cannot save enrollment record; a restart will not re-adopt this pod");
        }
        Ok(())
    }

    /// Writes the pod's `pod_config` entry (its recorded addresses), ready or refusing.
    pub(super) fn set_pod_ready(&self, record: &EnrollRecord, ready: bool) -> Result<(), CaptureError> {
        let (ip4, ip6) = families(&record.ips);
        if ip4.is_none() && ip6.is_none() {
            return Err(CaptureError::NoAddress { uid: record.uid.to_string() });
        }
        let config = PodConfig::new(ip4, ip6).with_ready(ready);
        self.loaded
            .pod_config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(record.netns_cookie, config, 0)
            .map_err(|e| CaptureError::Map { uid: record.uid.to_string(), reason: format!("writing pod_config: {e}") })
    }

    /// Brings a captured pod's listeners up from its workload in state, then sets `POD_READY`.
    /// On failure the pod stays captured and refusing.
    pub(super) async fn serve_pod(
        &self,
        record: &mut EnrollRecord,
        worker: &mut Option<Arc<NetnsWorker>>,
    ) -> Result<PodProxy, CaptureError> {
        let uid = record.uid.clone();
        let ips = self.workload_ips(&uid)?;
        if ips != record.ips {
            // The workload's addresses changed (or the record predates keeping them).
            self.forget_inbound_sockets(&record.ips);
            record.ips = ips;
            self.set_pod_ready(record, false)?;
            if let Err(e) = self.records.save(record) {
                warn!(uid = uid.as_str(), error = %e, "cannot save enrollment record");
            }
        }
        let worker = match worker {
            Some(worker) => worker.clone(),
            None => worker.insert(Arc::new(NetnsWorker::start(&record.netns)?)).clone(),
        };
        let (ip4, ip6) = families(&record.ips);
        let mark = self.inputs.settings.socket_mark;
        let sets = worker
            .run(move || -> std::io::Result<Vec<PodListenerSet>> {
                let mut sets = Vec::new();
                if ip4.is_some() {
                    sets.push(PodListenerSet::bind(false, mark)?);
                }
                if ip6.is_some() {
                    sets.push(PodListenerSet::bind(true, mark)?);
                }
                Ok(sets)
            })
            .await?
            .map_err(io_err("creating listeners in", &record.netns))?;
        // Each family's 15006 socket receives that family's inbound plaintext (sk_lookup).
        let addrs: Vec<IpAddr> = ip4.map(IpAddr::V4).into_iter().chain(ip6.map(IpAddr::V6)).collect();
        for (ip, set) in addrs.iter().zip(&sets) {
            let inserted = self.loaded.inbound_sockets.lock().unwrap_or_else(|e| e.into_inner()).insert(
                IpKey::from(*ip),
                set.inbound_plain.as_raw_fd(),
                0,
            );
            if let Err(e) = inserted {
                self.forget_inbound_sockets(&addrs);
                return Err(CaptureError::Map {
                    uid: uid.to_string(),
                    reason: format!("registering the 15006 socket for {ip}: {e}"),
                });
            }
        }
        let listeners = match sets.into_iter().map(PodListenerSet::into_tokio).collect::<Result<Vec<_>, _>>() {
            Ok(listeners) => listeners,
            Err(e) => {
                self.forget_inbound_sockets(&addrs);
                return Err(io_err("registering listeners of", &record.netns)(e));
            }
        };
        if let Err(e) = self.set_pod_ready(record, true) {
            self.forget_inbound_sockets(&addrs);
            return Err(e);
        }
        let reply_routing = match worker.run(reply_routing::install).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                warn_no_reply_routing(&uid, &e);
                false
            }
            Err(e) => {
                warn_no_reply_routing(&uid, &e);
                false
            }
        };
        let ctx = PodContext {
            workload_uid: uid,
            sockets: Arc::new(PodSockets::new(worker, reply_routing.then(|| self.loaded.clone()))),
            orig_dst: Arc::new(MapOrigDst(self.loaded.clone())),
        };
        Ok(PodProxy::start(self.inputs.clone(), listeners, ctx))
    }

    fn forget_inbound_sockets(&self, ips: &[IpAddr]) {
        let mut sockets = self.loaded.inbound_sockets.lock().unwrap_or_else(|e| e.into_inner());
        for ip in ips {
            let _ = sockets.remove(&IpKey::from(*ip));
        }
    }

    fn forget_maps(&self, record: &EnrollRecord) {
        let _ = self.loaded.pod_config.lock().unwrap_or_else(|e| e.into_inner()).remove(&record.netns_cookie);
        let mut ips = record.ips.clone();
        if let Some(w) = self.inputs.state.read().workload_by_uid(&record.uid) {
            ips.extend(w.workload_ips.iter().filter(|ip| !record.ips.contains(ip)));
        }
        self.forget_inbound_sockets(&ips);
        let cleared = self.loaded.exclusions.lock().unwrap_or_else(|e| e.into_inner()).clear(record.netns_cookie, &ips);
        if let Err(e) = cleared {
            warn!(uid = record.uid.as_str(), error = %e, "cannot remove the pod's capture exclusions");
        }
    }

    /// Releases a pod: removes its map entries, links and record.
    pub(super) fn tear_down(&self, record: &EnrollRecord) -> Result<(), CaptureError> {
        self.forget_maps(record);
        self.loaded.detach_pod(&pod_key(&record.uid))?;
        self.records
            .remove(&record.uid)
            .map_err(io_err("removing the enrollment record of", Path::new(record.uid.as_str())))?;
        Ok(())
    }
}
