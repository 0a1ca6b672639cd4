//! Funded agents: a new wallet with SOL and test USDC, and its [`AgentConfig`].

use std::sync::Arc;

use solana_sdk::signature::Keypair;
use x402pp_client::{Agent, AgentConfig, Budget};

use crate::{World, LAMPORTS_PER_SOL};

/// A change every agent's configuration gets ([`crate::WorldBuilder::agent_config`]).
pub(crate) type ConfigureAgent = Arc<dyn Fn(&mut AgentConfig) + Send + Sync>;

/// How the world makes agents: funds, budget and configuration hooks, set by the builder.
#[derive(Clone)]
pub struct AgentDefaults {
    /// Lamports of each new wallet.
    pub lamports: u64,
    /// Test USDC of each new wallet.
    pub tokens: u64,
    /// The agents' budget.
    pub budget: Budget,
    pub(crate) configure: Vec<ConfigureAgent>,
}

impl Default for AgentDefaults {
    fn default() -> Self {
        Self {
            lamports: LAMPORTS_PER_SOL,
            tokens: 1_000_000,
            budget: Budget::default(),
            configure: Vec::new(),
        }
    }
}

impl World {
    /// The configuration of an agent paying from a new wallet funded with the defaults
    /// ([`crate::WorldBuilder::agent_tokens`], [`crate::WorldBuilder::agent_lamports`]).
    pub fn agent_config(&self) -> anyhow::Result<AgentConfig> {
        let wallet = self.wallet(self.agent_defaults.tokens)?;
        Ok(self.agent_config_for(wallet))
    }

    /// The configuration of an agent paying from `wallet` (not funded here): the localnet's RPC,
    /// the default budget, paying in the localnet's test USDC (SPL Token and Token-2022 mints:
    /// a localnet has no USDC the agent knows by itself), then the builder's
    /// [`crate::WorldBuilder::agent_config`] hooks.
    pub fn agent_config_for(&self, wallet: Arc<Keypair>) -> AgentConfig {
        let mut config =
            AgentConfig::new(self.localnet.rpc_url(), wallet, self.agent_defaults.budget);
        config.assets = vec![self.localnet.usdc_mint(), self.localnet.usdc_2022_mint()];
        for configure in &self.agent_defaults.configure {
            configure(&mut config);
        }
        config
    }

    /// An agent on a new funded wallet ([`World::agent_config`]).
    pub async fn agent(&self) -> anyhow::Result<Agent> {
        self.agent_with(|_| {}).await
    }

    /// An agent on a new funded wallet, with `configure` applied after the defaults.
    pub async fn agent_with(
        &self,
        configure: impl FnOnce(&mut AgentConfig),
    ) -> anyhow::Result<Agent> {
        let mut config = self.agent_config()?;
        configure(&mut config);
        Ok(Agent::new(config).await?)
    }
}
