//! Which facilitator settles the provider's `exact` payments.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use solana_client::nonblocking::rpc_client::RpcClient;
use solana_sdk::signature::Keypair;
use x402pp_protocol::Network;
use x402pp_server::{HttpFacilitator, SharedFacilitator};
use x402pp_solana::exact::facilitator::{ExactFacilitator, FacilitatorConfig};
use x402pp_solana::sponsor::{Sponsor, SponsorPolicy};

/// Makes the provider's facilitator from the world's parts (called again for every provider
/// the world starts).
pub type MakeFacilitator = Arc<dyn Fn(&FacilitatorParts) -> SharedFacilitator + Send + Sync>;

/// What the world's facilitator is made of.
#[derive(Clone)]
pub struct FacilitatorParts {
    /// The direct RPC client.
    pub rpc: Arc<RpcClient>,
    /// The funded fee payer.
    pub fee_payer: Arc<Keypair>,
    /// The network announced.
    pub network: Network,
}

impl FacilitatorParts {
    /// An `exact` facilitator with the default configuration (a fresh one has an empty
    /// duplicate cache, as a restarted process has).
    pub fn exact(&self) -> ExactFacilitator {
        ExactFacilitator::new(
            self.rpc.clone(),
            self.fee_payer.clone(),
            FacilitatorConfig::new(self.network.clone()),
        )
    }

    /// The facilitator service on a free port, its fee payer sponsoring agents' escrow
    /// transactions under `policy` (`POST /sponsor`); returns its address.
    pub async fn serve_sponsoring(&self, policy: SponsorPolicy) -> std::io::Result<SocketAddr> {
        let sponsor = Sponsor::new(self.rpc.clone(), self.fee_payer.clone(), policy);
        let state = x402pp_facilitator::AppState::new(Arc::new(self.exact()), self.rpc.clone())
            .with_sponsor(Arc::new(sponsor));
        let (addr, _task) =
            x402pp_facilitator::serve(SocketAddr::from(([127, 0, 0, 1], 0)), state).await?;
        Ok(addr)
    }
}

/// Which facilitator the world runs.
#[derive(Clone, Default)]
pub enum Facilitator {
    /// None: the provider gets no facilitator.
    #[default]
    None,
    /// An [`ExactFacilitator`] in the provider's process, called directly.
    InProcess,
    /// The facilitator service (`x402pp-facilitator`) on a free port
    /// ([`crate::World::facilitator_url`]); the provider reaches it over HTTP.
    Http,
    /// The test's own ([`crate::WorldBuilder::facilitator_with`]).
    Custom(MakeFacilitator),
}

impl fmt::Debug for Facilitator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "None",
            Self::InProcess => "InProcess",
            Self::Http => "Http",
            Self::Custom(_) => "Custom",
        })
    }
}

impl Facilitator {
    /// Whether the fee payer needs funds.
    pub(crate) fn runs(&self) -> bool {
        !matches!(self, Self::None)
    }

    /// The provider's facilitator; `service` is the served facilitator's address for
    /// [`Self::Http`].
    pub(crate) fn make(
        &self,
        parts: &FacilitatorParts,
        service: Option<SocketAddr>,
    ) -> Option<SharedFacilitator> {
        match self {
            Self::None => None,
            Self::InProcess => Some(Arc::new(parts.exact())),
            Self::Http => service.map(|addr| {
                Arc::new(HttpFacilitator::new(format!("http://{addr}"))) as SharedFacilitator
            }),
            Self::Custom(make) => Some(make(parts)),
        }
    }

    /// Serves the facilitator service for [`Self::Http`]; its address.
    pub(crate) async fn serve(
        &self,
        parts: &FacilitatorParts,
    ) -> anyhow::Result<Option<SocketAddr>> {
        if !matches!(self, Self::Http) {
            return Ok(None);
        }
        let state = x402pp_facilitator::AppState::new(Arc::new(parts.exact()), parts.rpc.clone());
        let (addr, _task) =
            x402pp_facilitator::serve(SocketAddr::from(([127, 0, 0, 1], 0)), state).await?;
        Ok(Some(addr))
    }
}
