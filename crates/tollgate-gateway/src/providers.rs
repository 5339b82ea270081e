//! Which [`Provider`] implementation answers for each [`ProviderKind`]: the one place that
//! names them all.

use crate::config::ProviderKind;
use crate::provider::Provider;

/// The provider of `kind`.
pub fn of(kind: ProviderKind) -> &'static dyn Provider {
    match kind {
        ProviderKind::OpenAi => &crate::openai::OpenAi,
        ProviderKind::Anthropic => &crate::anthropic::Anthropic,
    }
}
