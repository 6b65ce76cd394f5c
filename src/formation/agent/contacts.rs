//! The contact points the [form gate](crate::formation::gate) reads: the agent registers
//! as a candidate where the backend's listing depends on membership, and, before
//! forming, lists and probes them.

use std::time::Duration;

use crate::NodeName;
use crate::backend::{Backend, Registration, RegistrationHandle};
use crate::formation::gate::{self, ContactView, FormGate};

use super::{Agent, FormationError};

/// A candidate registration lives this long without its keep-alive.
const CANDIDATE_TTL: Duration = Duration::from_secs(30);

impl Agent {
    /// Where the contact points are listed: the backend itself when its listing does not
    /// depend on membership, else its candidates.
    fn contact_source(&self) -> Result<std::sync::Arc<dyn Backend>, FormationError> {
        let backend = &self.inner.backend;
        if backend.lists_contact_points() {
            return Ok(backend.clone());
        }
        backend.candidates().ok_or_else(|| {
            FormationError::Config(format!(
                "the form gate needs contact points (required_contact_points > 1 or a \
                 stable_margin), and the {} backend lists only members and has no \
                 candidates: set required_contact_points to 1 and stable_margin to 0",
                backend.name()
            ))
        })
    }

    /// Registers the managed node as a candidate, when the gate needs contact points and
    /// the backend lists only members; the handle lives as long as the formation run.
    pub(super) async fn register_candidate(
        &self,
    ) -> Result<Option<RegistrationHandle>, FormationError> {
        if !self.inner.config.form_gate.needs_contact_points()
            || self.inner.backend.lists_contact_points()
        {
            return Ok(None);
        }
        let source = self.contact_source()?;
        let handle = source
            .register(Registration::new(self.node().clone(), CANDIDATE_TTL))
            .await
            .map_err(|source| FormationError::Backend {
                step: "registering as a candidate",
                source,
            })?;
        tracing::info!("registered as a candidate (contact point)");
        Ok(Some(handle))
    }

    /// The gate's verdict, right before forming a new cluster.
    pub(super) async fn gate_form(&self) -> Result<(), FormationError> {
        let gate = self.inner.config.form_gate.clone();
        if gate == FormGate::default() {
            return Ok(());
        }
        let me = self.node().clone();
        let refused = |reason: String| FormationError::FormRefused {
            node: me.clone(),
            reason,
        };
        if !gate.needs_contact_points() {
            let view = ContactView {
                answered: vec![me.clone()],
                ..ContactView::default()
            };
            return gate::check(&gate, &view).map_err(refused);
        }
        let listed = self
            .contact_source()?
            .list_nodes()
            .await
            .map_err(|source| FormationError::Backend {
                step: "listing the contact points",
                source,
            })?;
        let mut names: Vec<NodeName> = listed.into_iter().map(|r| r.node).collect();
        names.push(me.clone());
        names.sort();
        names.dedup();
        let stable_for = self
            .inner
            .contacts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(names.clone(), std::time::Instant::now());
        let mut view = ContactView {
            answered: vec![me.clone()],
            clustered: None,
            stable_for,
        };
        for node in names.iter().filter(|n| **n != me) {
            let probe = self.probe(node).await?;
            if probe.live || probe.booting {
                view.answered.push(node.clone());
            }
            let size = probe.membership.running_members.len();
            if probe.live && size >= 2 && view.clustered.is_none() {
                view.clustered = Some((node.clone(), size));
            }
        }
        view.answered.sort();
        let verdict = gate::check(&gate, &view);
        if let Err(reason) = &verdict {
            tracing::info!(%reason, "not forming a new cluster yet");
        }
        verdict.map_err(refused)
    }
}
