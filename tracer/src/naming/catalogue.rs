//! The provider catalogue: which provider a hostname belongs to, from built-in patterns for the
//! LLM and media APIs that one-api and its forks talk to, plus a TOML file (`--providers FILE`):
//!
//! ```toml
//! [[provider]]
//! name = "openai"                                # replaces the built-in "openai"
//! hosts = ["api.openai.com", "*.openai.azure.com"]
//!
//! [[provider]]
//! name = "my-gateway"                            # a new provider
//! hosts = ["llm.example.com"]
//!
//! [[provider]]
//! name = "coze"                                  # an empty list removes a built-in one
//! hosts = []
//! ```
//!
//! Patterns: a hostname, matched case-insensitively and without a trailing dot, where `*`
//! stands for
//! - a leading `*.`: one or more whole labels ("*.openai.azure.com" matches
//!   "x.openai.azure.com" and "a.b.openai.azure.com", not "openai.azure.com");
//! - anywhere else: one or more characters within one label ("*-aiplatform.googleapis.com",
//!   "bedrock-runtime.*.amazonaws.com").
//!
//! At most one `*` per label, and the last two labels are literal (no "*.com", "api.*").
//! When several patterns match, an exact hostname beats a wildcard, then the pattern with more
//! literal characters wins, then one from the file, then the provider name first in
//! alphabetical order.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;
use toml::Spanned;

use super::MAX_HOSTNAME_LEN;

/// Built-in providers. Sources: the default base URLs of one-api's and new-api's channel types
/// (relay/channeltype/url.go, constant/channel.go) and the providers' API references. Literal
/// hostnames are also what the address book resolves, so regional hosts are listed one by one
/// where they are few.
const BUILTIN: &[(&str, &[&str])] = &[
    ("openai", &["api.openai.com", "chatgpt.com"]),
    (
        "azure-openai",
        &[
            "*.openai.azure.com",
            "*.cognitiveservices.azure.com",
            "*.services.ai.azure.com",
        ],
    ),
    ("anthropic", &["api.anthropic.com"]),
    ("gemini", &["generativelanguage.googleapis.com"]),
    (
        "vertex-ai",
        &["aiplatform.googleapis.com", "*-aiplatform.googleapis.com"],
    ),
    (
        "aws-bedrock",
        &[
            "bedrock-runtime.*.amazonaws.com",
            "bedrock-runtime-fips.*.amazonaws.com",
            "bedrock.*.amazonaws.com",
        ],
    ),
    ("xai", &["api.x.ai"]),
    ("deepseek", &["api.deepseek.com"]),
    ("mistral", &["api.mistral.ai"]),
    ("groq", &["api.groq.com"]),
    ("openrouter", &["openrouter.ai"]),
    ("together", &["api.together.xyz", "api.together.ai"]),
    (
        "moonshot",
        &["api.moonshot.cn", "api.moonshot.ai", "api.kimi.com"],
    ),
    ("zhipu", &["open.bigmodel.cn", "api.z.ai"]),
    (
        "baidu-qianfan",
        &["qianfan.baidubce.com", "aip.baidubce.com"],
    ),
    (
        "alibaba-dashscope",
        &["dashscope.aliyuncs.com", "dashscope-intl.aliyuncs.com"],
    ),
    (
        "tencent-hunyuan",
        &[
            "hunyuan.tencentcloudapi.com",
            "api.hunyuan.cloud.tencent.com",
        ],
    ),
    (
        "minimax",
        &["api.minimax.chat", "api.minimaxi.com", "api.minimax.io"],
    ),
    (
        "kling",
        &[
            "api.klingai.com",
            "api-singapore.klingai.com",
            "api-beijing.klingai.com",
            "*.klingai.com",
        ],
    ),
    ("runway", &["api.dev.runwayml.com"]),
    ("luma", &["api.lumalabs.ai"]),
    ("replicate", &["api.replicate.com"]),
    ("stability", &["api.stability.ai"]),
    ("cohere", &["api.cohere.ai", "api.cohere.com"]),
    ("perplexity", &["api.perplexity.ai"]),
    ("fireworks", &["api.fireworks.ai"]),
    (
        "siliconflow",
        &["api.siliconflow.cn", "api.siliconflow.com"],
    ),
    (
        "volcengine-ark",
        &["ark.cn-beijing.volces.com", "ark.*.volces.com"],
    ),
    ("volcengine-visual", &["visual.volcengineapi.com"]),
    (
        "byteplus-ark",
        &["ark.ap-southeast.bytepluses.com", "ark.*.bytepluses.com"],
    ),
    (
        "xunfei-spark",
        &["spark-api.xf-yun.com", "spark-api-open.xf-yun.com"],
    ),
    ("360-zhinao", &["api.360.cn", "ai.360.cn"]),
    ("lingyiwanwu", &["api.lingyiwanwu.com", "api.01.ai"]),
    ("baichuan", &["api.baichuan-ai.com"]),
    ("stepfun", &["api.stepfun.com"]),
    ("coze", &["api.coze.com", "api.coze.cn"]),
    ("jina", &["api.jina.ai"]),
    ("cloudflare", &["api.cloudflare.com"]),
    ("deepl", &["api.deepl.com", "api-free.deepl.com"]),
    ("novita", &["api.novita.ai"]),
    ("dify", &["api.dify.ai"]),
    ("vidu", &["api.vidu.cn", "api.vidu.com"]),
    ("moka-ai", &["api.moka.ai"]),
    ("modelscope", &["api-inference.modelscope.cn"]),
    ("nvidia-nim", &["integrate.api.nvidia.com"]),
    (
        "huggingface",
        &["router.huggingface.co", "api-inference.huggingface.co"],
    ),
    ("cerebras", &["api.cerebras.ai"]),
    ("deepinfra", &["api.deepinfra.com"]),
    ("sambanova", &["api.sambanova.ai"]),
    ("elevenlabs", &["api.elevenlabs.io"]),
    ("fal", &["fal.run", "queue.fal.run"]),
    ("ideogram", &["api.ideogram.ai"]),
    // OpenAI resellers that are default channel types in one-api and new-api.
    ("api2d", &["oa.api2d.net"]),
    ("openai-sb", &["api.openai-sb.com"]),
    ("ohmygpt", &["api.ohmygpt.com"]),
    ("aiproxy", &["api.aiproxy.io"]),
    ("openaimax", &["api.openaimax.com"]),
    ("api2gpt", &["api.api2gpt.com"]),
    ("aigc2d", &["api.aigc2d.com"]),
];

/// Which provider a hostname belongs to.
#[derive(Debug, Clone)]
pub struct Catalogue {
    providers: Vec<Provider>,
    /// Literal patterns: hostname -> index in `providers`.
    exact: HashMap<String, usize>,
    /// Patterns with a `*`, with the index of their provider.
    wildcards: Vec<(Pattern, usize)>,
}

#[derive(Debug, Clone)]
struct Provider {
    name: String,
    patterns: Vec<Pattern>,
    from_file: bool,
}

impl Catalogue {
    /// The built-in providers.
    pub fn builtin() -> Self {
        let providers = BUILTIN
            .iter()
            .map(|(name, hosts)| Provider {
                name: (*name).to_owned(),
                // Every built-in pattern parses (a test checks); one that did not would only
                // be missing, never a wrong answer.
                patterns: hosts
                    .iter()
                    .filter_map(|host| Pattern::parse(host).ok())
                    .collect(),
                from_file: false,
            })
            .collect();
        Self::indexed(providers)
    }

    /// Adds or replaces entries from a TOML file (see the module documentation); a mistake is
    /// reported as "FILE:LINE:COL: message", as a [`ProvidersFileError`].
    pub fn with_file(self, path: &Path) -> anyhow::Result<Self> {
        let source = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the providers file {}", path.display()))?;
        Ok(self.with_toml(&source, path)?)
    }

    /// The provider of a hostname ("api.openai.com" -> "openai"; "x.openai.azure.com" ->
    /// "azure-openai"), case-insensitively, with or without a trailing dot.
    pub fn provider_of(&self, host: &str) -> Option<&str> {
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        if host.is_empty() {
            return None;
        }
        if let Some(&index) = self.exact.get(&host) {
            return Some(&self.providers[index].name);
        }
        let labels: Vec<&str> = host.split('.').collect();
        self.wildcards
            .iter()
            .filter(|(pattern, _)| pattern.matches(&labels))
            .max_by_key(|(pattern, index)| {
                let provider = &self.providers[*index];
                (
                    pattern.literal_len(),
                    provider.from_file,
                    Reverse(provider.name.as_str()),
                )
            })
            .map(|(_, index)| self.providers[*index].name.as_str())
    }

    /// Concrete hostnames worth resolving for the address fallback (the patterns without a
    /// wildcard), sorted.
    pub fn resolvable_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self.exact.keys().cloned().collect();
        hosts.sort();
        hosts
    }

    fn indexed(providers: Vec<Provider>) -> Self {
        let mut exact = HashMap::new();
        let mut wildcards = Vec::new();
        // File entries go last so that they win over a built-in pattern for the same host.
        for from_file in [false, true] {
            for (index, provider) in providers.iter().enumerate() {
                if provider.from_file != from_file {
                    continue;
                }
                for pattern in &provider.patterns {
                    if pattern.is_literal() {
                        exact.insert(pattern.text.clone(), index);
                    } else {
                        wildcards.push((pattern.clone(), index));
                    }
                }
            }
        }
        Catalogue {
            providers,
            exact,
            wildcards,
        }
    }

    fn with_toml(self, source: &str, path: &Path) -> Result<Self, ProvidersFileError> {
        let error = |span: Option<Range<usize>>, message: String| {
            ProvidersFileError::new(path, source, span, message)
        };
        let file: ProvidersFile =
            toml::from_str(source).map_err(|e| error(e.span(), e.message().to_owned()))?;

        let mut providers = self.providers;
        let mut seen_names: HashMap<String, Range<usize>> = HashMap::new();
        let mut seen_hosts: HashMap<String, String> = HashMap::new();
        for entry in file.provider {
            let name_span = entry.name.span();
            let name = entry.name.into_inner();
            if !is_provider_name(&name) {
                return Err(error(
                    Some(name_span),
                    format!(
                        "provider name {name:?} must be 1 to 64 letters, digits, '-', '_' or '.'"
                    ),
                ));
            }
            if let Some(first) = seen_names.get(&name) {
                let (line, _) = line_column(source, first.start);
                return Err(error(
                    Some(name_span),
                    format!("provider {name:?} is already defined at line {line}"),
                ));
            }
            seen_names.insert(name.clone(), name_span);

            let mut patterns = Vec::new();
            for host in entry.hosts {
                let host_span = host.span();
                let pattern = Pattern::parse(host.get_ref())
                    .map_err(|message| error(Some(host_span.clone()), message))?;
                if let Some(owner) = seen_hosts.get(&pattern.text) {
                    let message = if *owner == name {
                        format!("host {:?} is listed twice", pattern.text)
                    } else {
                        format!(
                            "host {:?} is already listed for provider {owner:?}",
                            pattern.text
                        )
                    };
                    return Err(error(Some(host_span), message));
                }
                seen_hosts.insert(pattern.text.clone(), name.clone());
                patterns.push(pattern);
            }

            let replacement = Provider {
                name,
                patterns,
                from_file: true,
            };
            match providers.iter_mut().find(|p| p.name == replacement.name) {
                Some(existing) => *existing = replacement,
                None => providers.push(replacement),
            }
        }
        Ok(Self::indexed(providers))
    }
}

/// The `--providers` file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProvidersFile {
    #[serde(default)]
    provider: Vec<ProviderEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderEntry {
    name: Spanned<String>,
    hosts: Vec<Spanned<String>>,
}

fn is_provider_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A mistake in the providers file, where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvidersFileError {
    pub path: PathBuf,
    /// 1-based line and column (in characters) of the mistake, when the parser located it.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl ProvidersFileError {
    fn new(path: &Path, source: &str, span: Option<Range<usize>>, message: String) -> Self {
        ProvidersFileError {
            path: path.to_owned(),
            position: span.map(|span| line_column(source, span.start)),
            message,
        }
    }
}

impl fmt::Display for ProvidersFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => {
                write!(
                    f,
                    "{}:{line}:{column}: {}",
                    self.path.display(),
                    self.message
                )
            }
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for ProvidersFileError {}

/// 1-based line and column (counted in characters) of a byte offset.
fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// A hostname pattern (see the module documentation), lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    /// The pattern as written, lowercased, without a trailing dot.
    text: String,
    /// It began with "*.": one or more labels precede `labels`.
    any_subdomains: bool,
    labels: Vec<Label>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Label {
    Literal(String),
    /// `prefix*suffix`: the star stands for one or more characters.
    Glob {
        prefix: String,
        suffix: String,
    },
}

impl Pattern {
    fn parse(raw: &str) -> Result<Pattern, String> {
        if raw.is_empty() {
            return Err("empty host pattern".to_owned());
        }
        if raw.contains(['/', ':', '@', '?', '#']) {
            return Err(format!(
                "{raw:?} is not a bare hostname: write it without scheme, port or path"
            ));
        }
        let text = raw.strip_suffix('.').unwrap_or(raw).to_ascii_lowercase();
        if text.len() > MAX_HOSTNAME_LEN {
            return Err(format!(
                "{raw:?} is longer than {MAX_HOSTNAME_LEN} characters"
            ));
        }
        let all: Vec<&str> = text.split('.').collect();
        for label in &all {
            if label.is_empty() {
                return Err(format!("{raw:?} has an empty label"));
            }
            if label.len() > 63 {
                return Err(format!("{raw:?} has a label longer than 63 characters"));
            }
            if let Some(bad) = label
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '*')))
            {
                return Err(format!(
                    "{raw:?} has the character {bad:?}, not allowed in a hostname"
                ));
            }
            if label.matches('*').count() > 1 {
                return Err(format!(
                    "{raw:?} has more than one '*' in the label {label:?}"
                ));
            }
        }
        let literal_tail = all.len() >= 2 && all[all.len() - 2..].iter().all(|l| !l.contains('*'));
        if text.contains('*') && !literal_tail {
            return Err(format!(
                "{raw:?}: a '*' must leave the last two labels literal, as in \"*.example.com\""
            ));
        }
        let (any_subdomains, rest) = match all.split_first() {
            Some((&"*", rest)) => (true, rest),
            _ => (false, all.as_slice()),
        };
        let labels = rest
            .iter()
            .map(|label| match label.split_once('*') {
                Some((prefix, suffix)) => Label::Glob {
                    prefix: prefix.to_owned(),
                    suffix: suffix.to_owned(),
                },
                None => Label::Literal((*label).to_owned()),
            })
            .collect();
        Ok(Pattern {
            text,
            any_subdomains,
            labels,
        })
    }

    fn is_literal(&self) -> bool {
        !self.text.contains('*')
    }

    /// Characters that must match as written: the more, the more specific.
    fn literal_len(&self) -> usize {
        self.text.len() - self.text.matches('*').count()
    }

    /// Whether a lowercase hostname, split into labels, matches.
    fn matches(&self, host: &[&str]) -> bool {
        let tail = if self.any_subdomains {
            if host.len() <= self.labels.len() {
                return false;
            }
            &host[host.len() - self.labels.len()..]
        } else {
            if host.len() != self.labels.len() {
                return false;
            }
            host
        };
        self.labels
            .iter()
            .zip(tail)
            .all(|(label, host_label)| match label {
                Label::Literal(literal) => literal == host_label,
                Label::Glob { prefix, suffix } => {
                    host_label.len() > prefix.len() + suffix.len()
                        && host_label.starts_with(prefix.as_str())
                        && host_label.ends_with(suffix.as_str())
                }
            })
    }
}

#[cfg(test)]
mod tests;
