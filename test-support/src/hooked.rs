//! A formation target with a fault injected in front of a real one.

use std::fmt;
use std::sync::Arc;

use autocluster::NodeName;
use autocluster::formation::{
    ClusterTarget, DataState, FormationError, Inspection, Membership, Probe, Stage, Step,
};

type ProbeHook = Box<dyn Fn(&NodeName, Option<&Probe>) -> Option<Probe> + Send + Sync>;
type FormHook = Box<dyn Fn() + Send + Sync>;

/// `inner` with hooks: `probe` is asked before each probe (with `None`; a `Some` answer
/// replaces the probe) and after it (with the result; a `Some` answer replaces it), and
/// `form` runs before the target forms a new cluster. Every other call goes to `inner`.
pub struct Hooked {
    inner: Arc<dyn ClusterTarget>,
    kind: &'static str,
    probe: Option<ProbeHook>,
    form: Option<FormHook>,
}

impl Hooked {
    pub fn new(inner: impl ClusterTarget + 'static, kind: &'static str) -> Hooked {
        Hooked {
            inner: Arc::new(inner),
            kind,
            probe: None,
            form: None,
        }
    }

    pub fn on_probe(
        mut self,
        hook: impl Fn(&NodeName, Option<&Probe>) -> Option<Probe> + Send + Sync + 'static,
    ) -> Hooked {
        self.probe = Some(Box::new(hook));
        self
    }

    pub fn on_form(mut self, hook: impl Fn() + Send + Sync + 'static) -> Hooked {
        self.form = Some(Box::new(hook));
        self
    }
}

impl fmt::Debug for Hooked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooked")
            .field("kind", &self.kind)
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl ClusterTarget for Hooked {
    fn node(&self) -> &NodeName {
        self.inner.node()
    }
    fn kind(&self) -> &'static str {
        self.kind
    }
    async fn probe(&self, node: &NodeName) -> Result<Probe, FormationError> {
        if let Some(replaced) = self.probe.as_ref().and_then(|h| h(node, None)) {
            return Ok(replaced);
        }
        let probe = self.inner.probe(node).await?;
        Ok(self
            .probe
            .as_ref()
            .and_then(|h| h(node, Some(&probe)))
            .unwrap_or(probe))
    }
    async fn membership(&self) -> Result<Membership, FormationError> {
        self.inner.membership().await
    }
    async fn inspect(&self) -> Result<Inspection, FormationError> {
        self.inner.inspect().await
    }
    async fn inventory(&self) -> Result<DataState, FormationError> {
        self.inner.inventory().await
    }
    async fn execute(&self, step: &Step) -> Result<Stage, FormationError> {
        if *step == Step::Form
            && let Some(hook) = &self.form
        {
            hook();
        }
        self.inner.execute(step).await
    }
    async fn reconnect(&self, member: &NodeName) -> Result<bool, FormationError> {
        self.inner.reconnect(member).await
    }
    async fn forget(&self, member: &NodeName) -> Result<(), FormationError> {
        self.inner.forget(member).await
    }
}
