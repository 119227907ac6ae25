//! The steps of capturing, serving and releasing one pod, each with its own undo.
//!
//! Capturing puts the pod in `pod_config` with `POD_READY` clear and attaches `sk_lookup` to
//! its namespace: from then on its traffic goes to ztunnel or is refused. Serving binds its
//! listeners in its namespace, registers its 15006 sockets and sets `POD_READY`; a failed serve
//! leaves the pod captured with `POD_READY` clear, never uncaptured. A pod's exclusions
//! (Istio's annotations) go into the maps when it is captured and leave with it. Only
//! [`Pods::tear_down`] (unenroll, or a pod proven gone) removes the pod from the maps.

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use tracing::warn;

use super::records::{EnrollRecord, pod_key};
use super::wrapped::{MapOrigDst, PodSocketFactory, into_tokio};
use super::{Pods, PodsError, io_err, map_err, warn_no_reply_routing};
use crate::capture::netns::NetnsWorker;
use crate::capture::pod_maps::families;
use crate::capture::reply_routing;
use crate::capture::sockets::{PodListenerSet, PodSockets};
use crate::proxy::pod::{PodContext, PodProxy};
use crate::state::CaptureExclusions;

impl Pods {
    /// Captures a newly enrolled pod: its exclusions in the maps, `pod_config` refusing,
    /// `sk_lookup` attached, record saved. On failure nothing of it is left.
    pub(super) fn capture_pod(&self, record: &EnrollRecord, exclusions: &CaptureExclusions) -> Result<(), PodsError> {
        let captured = self
            .loaded
            .apply_exclusions(record.netns_cookie, &record.ips, exclusions)
            .and_then(|()| self.loaded.set_pod(record.netns_cookie, &record.ips, false))
            .map_err(map_err(&record.uid))
            .and_then(|()| File::open(&record.netns).map_err(io_err("opening netns", &record.netns)))
            .and_then(|ns| {
                self.loaded
                    .attach_pod(&pod_key(&record.uid), &ns)
                    .map_err(|e| PodsError::Capture(crate::capture::CaptureError::Load(e)))
            });
        if let Err(e) = captured {
            self.forget_maps(record);
            return Err(e);
        }
        if let Err(e) = self.records.save(record) {
            warn!(uid = record.uid.as_str(), error = %e, "cannot save enrollment record; a restart will not re-adopt this pod");
        }
        Ok(())
    }

    /// Writes the pod's `pod_config` entry (its recorded addresses), ready or refusing.
    pub(super) fn set_pod_ready(&self, record: &EnrollRecord, ready: bool) -> Result<(), PodsError> {
        if record.ips.is_empty() {
            return Err(PodsError::NoAddress { uid: record.uid.to_string() });
        }
        self.loaded.set_pod(record.netns_cookie, &record.ips, ready).map_err(map_err(&record.uid))
    }

    /// Brings a captured pod's listeners up from its workload in state, then sets `POD_READY`.
    /// On failure the pod stays captured and refusing.
    pub(super) async fn serve_pod(
        &self,
        record: &mut EnrollRecord,
        worker: &mut Option<Arc<NetnsWorker>>,
    ) -> Result<PodProxy, PodsError> {
        let uid = record.uid.clone();
        let ips = self.workload_ips(&uid)?;
        if ips != record.ips {
            // The workload's addresses differ from the ones captured (given by the source, or
            // the record predates keeping them).
            self.loaded.forget_inbound(&record.ips);
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
            if let Err(e) = self.loaded.register_inbound(*ip, set.inbound_plain.as_raw_fd()) {
                self.loaded.forget_inbound(&addrs);
                return Err(map_err(&uid)(e));
            }
        }
        let listeners = match sets.into_iter().map(into_tokio).collect::<Result<Vec<_>, _>>() {
            Ok(listeners) => listeners,
            Err(e) => {
                self.loaded.forget_inbound(&addrs);
                return Err(io_err("registering listeners of", &record.netns)(e));
            }
        };
        if let Err(e) = self.set_pod_ready(record, true) {
            self.loaded.forget_inbound(&addrs);
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
        let sockets = PodSockets::new(worker, reply_routing.then(|| self.loaded.clone()));
        let ctx = PodContext {
            workload_uid: uid,
            sockets: Arc::new(PodSocketFactory(sockets)),
            orig_dst: Arc::new(MapOrigDst(self.loaded.clone())),
        };
        Ok(PodProxy::start(self.inputs.clone(), listeners, ctx))
    }

    fn forget_maps(&self, record: &EnrollRecord) {
        let mut ips = record.ips.clone();
        if let Some(w) = self.inputs.state.read().workload_by_uid(&record.uid) {
            ips.extend(w.workload_ips.iter().filter(|ip| !record.ips.contains(ip)));
        }
        if let Err(e) = self.loaded.forget_pod(record.netns_cookie, &ips) {
            warn!(uid = record.uid.as_str(), error = %e, "cannot remove the pod from the capture maps");
        }
    }

    /// Releases a pod: removes its map entries, links and record.
    pub(super) fn tear_down(&self, record: &EnrollRecord) -> Result<(), PodsError> {
        self.forget_maps(record);
        self.loaded.detach_pod(&pod_key(&record.uid)).map_err(|e| PodsError::Capture(e.into()))?;
        self.records
            .remove(&record.uid)
            .map_err(io_err("removing the enrollment record of", Path::new(record.uid.as_str())))?;
        Ok(())
    }
}
