use std::io::Write;
use std::path::Path;

use super::{Catalogue, Pattern, ProvidersFileError, BUILTIN};

fn with_toml(source: &str) -> Result<Catalogue, ProvidersFileError> {
    Catalogue::builtin().with_toml(source, Path::new("providers.toml"))
}

fn error_of(source: &str) -> String {
    match with_toml(source) {
        Ok(_) => panic!("accepted:\n{source}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_builtin_pattern_parses_and_no_host_is_listed_twice() {
    let mut seen = std::collections::HashMap::new();
    for (name, hosts) in BUILTIN {
        assert!(super::is_provider_name(name), "{name}");
        for host in *hosts {
            let pattern = Pattern::parse(host).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                pattern.text, *host,
                "built-in patterns are written lowercase"
            );
            if let Some(other) = seen.insert(*host, *name) {
                panic!("{host} is listed for {other} and {name}");
            }
        }
    }
    let names: std::collections::HashSet<_> = BUILTIN.iter().map(|(name, _)| name).collect();
    assert_eq!(names.len(), BUILTIN.len(), "provider names are unique");
}

#[test]
fn builtin_names_the_common_providers() {
    let catalogue = Catalogue::builtin();
    let cases = [
        ("api.openai.com", "openai"),
        ("myres.openai.azure.com", "azure-openai"),
        ("api.anthropic.com", "anthropic"),
        ("generativelanguage.googleapis.com", "gemini"),
        ("aiplatform.googleapis.com", "vertex-ai"),
        ("us-central1-aiplatform.googleapis.com", "vertex-ai"),
        ("bedrock-runtime.us-east-1.amazonaws.com", "aws-bedrock"),
        ("api.x.ai", "xai"),
        ("api.deepseek.com", "deepseek"),
        ("api.mistral.ai", "mistral"),
        ("api.groq.com", "groq"),
        ("openrouter.ai", "openrouter"),
        ("api.together.xyz", "together"),
        ("api.moonshot.cn", "moonshot"),
        ("api.moonshot.ai", "moonshot"),
        ("open.bigmodel.cn", "zhipu"),
        ("qianfan.baidubce.com", "baidu-qianfan"),
        ("aip.baidubce.com", "baidu-qianfan"),
        ("dashscope.aliyuncs.com", "alibaba-dashscope"),
        ("dashscope-intl.aliyuncs.com", "alibaba-dashscope"),
        ("hunyuan.tencentcloudapi.com", "tencent-hunyuan"),
        ("api.hunyuan.cloud.tencent.com", "tencent-hunyuan"),
        ("api.minimax.chat", "minimax"),
        ("api.minimaxi.com", "minimax"),
        ("api.klingai.com", "kling"),
        ("api-singapore.klingai.com", "kling"),
        ("api.dev.runwayml.com", "runway"),
        ("api.lumalabs.ai", "luma"),
        ("api.replicate.com", "replicate"),
        ("api.stability.ai", "stability"),
        ("api.cohere.ai", "cohere"),
        ("api.cohere.com", "cohere"),
        ("api.perplexity.ai", "perplexity"),
        ("api.fireworks.ai", "fireworks"),
        ("api.siliconflow.cn", "siliconflow"),
        ("ark.cn-beijing.volces.com", "volcengine-ark"),
        ("ark.ap-southeast-1.volces.com", "volcengine-ark"),
        ("spark-api-open.xf-yun.com", "xunfei-spark"),
    ];
    for (host, provider) in cases {
        assert_eq!(catalogue.provider_of(host), Some(provider), "{host}");
    }
}

#[test]
fn wildcards_match_as_documented() {
    let catalogue = Catalogue::builtin();
    // A leading "*." is one or more labels, never none.
    assert_eq!(
        catalogue.provider_of("a.b.openai.azure.com"),
        Some("azure-openai")
    );
    assert_eq!(catalogue.provider_of("openai.azure.com"), None);
    assert_eq!(catalogue.provider_of("evilopenai.azure.com"), None);
    // "*-aiplatform" needs at least one character before the dash, in the same label.
    assert_eq!(catalogue.provider_of("-aiplatform.googleapis.com"), None);
    assert_eq!(
        catalogue.provider_of("x.us-aiplatform.googleapis.com"),
        None
    );
    assert_eq!(
        catalogue.provider_of("europe-west4-aiplatform.googleapis.com"),
        Some("vertex-ai")
    );
    // A middle "*" is exactly one label.
    assert_eq!(catalogue.provider_of("bedrock-runtime.amazonaws.com"), None);
    assert_eq!(
        catalogue.provider_of("bedrock-runtime.a.b.amazonaws.com"),
        None
    );
    assert_eq!(
        catalogue.provider_of("bedrock-runtime-fips.us-gov-west-1.amazonaws.com"),
        Some("aws-bedrock")
    );
    // Suffixes do not match on their own.
    assert_eq!(catalogue.provider_of("api.openai.com.evil.example"), None);
    assert_eq!(catalogue.provider_of("xapi.openai.com"), None);
    assert_eq!(catalogue.provider_of("127.0.0.12"), None);
    assert_eq!(catalogue.provider_of(""), None);
    assert_eq!(catalogue.provider_of("."), None);
}

#[test]
fn matching_ignores_case_and_a_trailing_dot() {
    let catalogue = Catalogue::builtin();
    assert_eq!(catalogue.provider_of("API.OpenAI.COM"), Some("openai"));
    assert_eq!(catalogue.provider_of("api.openai.com."), Some("openai"));
    assert_eq!(
        catalogue.provider_of("MyRes.OpenAI.Azure.Com."),
        Some("azure-openai")
    );
    let catalogue = with_toml("[[provider]]\nname = \"corp\"\nhosts = [\"LLM.Corp.Example.\"]\n")
        .expect("valid");
    assert_eq!(catalogue.provider_of("llm.corp.example"), Some("corp"));
}

#[test]
fn the_most_specific_pattern_wins() {
    let catalogue = with_toml(
        r#"
[[provider]]
name = "google-any"
hosts = ["*.googleapis.com"]

[[provider]]
name = "bedrock-east"
hosts = ["bedrock-runtime.us-east-1.amazonaws.com"]
"#,
    )
    .expect("valid");
    // Exact beats every wildcard; more literal characters beat fewer.
    assert_eq!(
        catalogue.provider_of("generativelanguage.googleapis.com"),
        Some("gemini")
    );
    assert_eq!(
        catalogue.provider_of("us-east5-aiplatform.googleapis.com"),
        Some("vertex-ai")
    );
    assert_eq!(
        catalogue.provider_of("storage.googleapis.com"),
        Some("google-any")
    );
    assert_eq!(
        catalogue.provider_of("bedrock-runtime.us-east-1.amazonaws.com"),
        Some("bedrock-east")
    );
    assert_eq!(
        catalogue.provider_of("bedrock-runtime.eu-west-1.amazonaws.com"),
        Some("aws-bedrock")
    );
}

#[test]
fn a_file_entry_replaces_a_builtin_one_and_adds_new_ones() {
    let mut file = tempfile::NamedTempFile::new().expect("a temporary file");
    write!(
        file,
        r#"
# Our OpenAI traffic goes through a gateway; Azure is ours too.
[[provider]]
name = "openai"
hosts = ["openai-gw.corp.example", "*.openai.azure.com"]

[[provider]]
name = "internal-llm"
hosts = ["llm.corp.example", "*.inference.corp.example"]

[[provider]]
name = "coze"
hosts = []

[[provider]]
name = "my-anthropic"
hosts = ["api.anthropic.com"]
"#
    )
    .expect("write the file");
    let catalogue = Catalogue::builtin()
        .with_file(file.path())
        .expect("a valid file");
    // Replaced: the built-in hosts of "openai" are gone, the new ones are in.
    assert_eq!(catalogue.provider_of("api.openai.com"), None);
    assert_eq!(
        catalogue.provider_of("openai-gw.corp.example"),
        Some("openai")
    );
    // The same wildcard as the built-in azure-openai: the file's entry wins.
    assert_eq!(catalogue.provider_of("x.openai.azure.com"), Some("openai"));
    // Added.
    assert_eq!(
        catalogue.provider_of("llm.corp.example"),
        Some("internal-llm")
    );
    assert_eq!(
        catalogue.provider_of("a.inference.corp.example"),
        Some("internal-llm")
    );
    // Removed.
    assert_eq!(catalogue.provider_of("api.coze.com"), None);
    // The same host as a built-in provider under a new name: the file wins.
    assert_eq!(
        catalogue.provider_of("api.anthropic.com"),
        Some("my-anthropic")
    );
    // Untouched.
    assert_eq!(catalogue.provider_of("api.deepseek.com"), Some("deepseek"));

    let hosts = catalogue.resolvable_hosts();
    assert!(hosts.contains(&"llm.corp.example".to_owned()));
    assert!(hosts.contains(&"api.anthropic.com".to_owned()));
    assert!(!hosts.contains(&"api.openai.com".to_owned()));
    assert!(!hosts.iter().any(|h| h.contains('*')));
}

#[test]
fn an_empty_file_changes_nothing() {
    let catalogue = with_toml("# nothing here\n").expect("valid");
    assert_eq!(
        catalogue.resolvable_hosts(),
        Catalogue::builtin().resolvable_hosts()
    );
}

#[test]
fn resolvable_hosts_are_the_literal_ones_sorted() {
    let hosts = Catalogue::builtin().resolvable_hosts();
    assert!(hosts.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
    for expected in [
        "api.openai.com",
        "api.anthropic.com",
        "api.klingai.com",
        "aiplatform.googleapis.com",
    ] {
        assert!(hosts.contains(&expected.to_owned()), "{expected}");
    }
    assert!(!hosts.iter().any(|h| h.contains('*')));
}

fn assert_reported(source: &str, location: &str, word: &str) {
    let message = error_of(source);
    assert!(
        message.starts_with(location),
        "{message:?} does not start with {location:?}"
    );
    assert!(
        message.contains(word),
        "{message:?} does not mention {word:?}"
    );
    assert!(!message.contains('\n'), "one line: {message:?}");
}

#[test]
fn mistakes_in_the_file_structure_are_reported_with_line_and_column() {
    let cases = [
        // (source, expected "file:line:col:" start, a word of the message)
        (
            "[[provider]]\nname = \"a\"\nhostz = [\"x.example\"]\n",
            "providers.toml:3:1:",
            "hostz",
        ),
        (
            "[[providers]]\nname = \"a\"\n",
            "providers.toml:1:",
            "providers",
        ),
        (
            "[[provider]]\nname = \"a\"\nhosts = \"x.example\"\n",
            "providers.toml:3:9:",
            "sequence",
        ),
        (
            "[[provider]]\nname = 7\nhosts = []\n",
            "providers.toml:2:8:",
            "string",
        ),
        (
            "[[provider]]\nname = \"a\"\n",
            "providers.toml:1:1:",
            "hosts",
        ),
        ("[[provider]\nname = \"a\"\n", "providers.toml:1:", ""),
        (
            "[[provider]]\nname = \"\"\nhosts = []\n",
            "providers.toml:2:8:",
            "provider name",
        ),
        (
            "[[provider]]\nname = \"a b\"\nhosts = []\n",
            "providers.toml:2:8:",
            "provider name",
        ),
        (
            "[[provider]]\nname = \"é\"\nhosts = []\n",
            "providers.toml:2:8:",
            "provider name",
        ),
        (
            "[[provider]]\nname = \"a\"\nhosts = []\n\n[[provider]]\nname = \"a\"\nhosts = []\n",
            "providers.toml:6:8:",
            "already defined at line 2",
        ),
        (
            "[[provider]]\nname = \"a\"\nhosts = [\"x.example\"]\n\
             [[provider]]\nname = \"b\"\nhosts = [\"X.example\"]\n",
            "providers.toml:6:10:",
            "already listed for provider \"a\"",
        ),
    ];
    for (source, location, word) in cases {
        assert_reported(source, location, word);
    }
}

#[test]
fn bad_host_patterns_are_reported_with_line_and_column() {
    let cases = [
        // (the hosts line, column of the bad pattern, a word of the message)
        (r#"hosts = ["ok.example", ""]"#, 24, "empty host pattern"),
        (r#"hosts = ["api.*.com*"]"#, 10, "last two labels"),
        (r#"hosts = ["*.com"]"#, 10, "last two labels"),
        (r#"hosts = ["api.openai.*"]"#, 10, "last two labels"),
        (r#"hosts = ["a**b.example.com"]"#, 10, "more than one '*'"),
        (r#"hosts = ["https://api.openai.com"]"#, 10, "scheme"),
        (r#"hosts = ["api.openai.com:443"]"#, 10, "port"),
        (r#"hosts = ["api..com"]"#, 10, "empty label"),
        (r#"hosts = ["api open.com"]"#, 10, "character ' '"),
        (r#"hosts = ["x.example", "x.example"]"#, 23, "listed twice"),
    ];
    for (hosts_line, column, word) in cases {
        let source = format!("[[provider]]\nname = \"a\"\n{hosts_line}\n");
        assert_reported(&source, &format!("providers.toml:3:{column}:"), word);
    }
}

#[test]
fn columns_count_characters_not_bytes() {
    // The 'x' is the 17th byte of its line and the 14th character.
    let message = error_of("[[provider]]\nname = \"ééé\" x\n");
    assert!(message.starts_with("providers.toml:2:14:"), "{message}");
}

#[test]
fn with_file_names_the_file_and_returns_a_typed_error() {
    let mut file = tempfile::NamedTempFile::new().expect("a temporary file");
    file.write_all(b"[[provider]]\nname = \"a\"\nhosts = [\"bad host\"]\n")
        .expect("write");
    let error = Catalogue::builtin()
        .with_file(file.path())
        .expect_err("a mistake");
    let typed = error
        .downcast_ref::<ProvidersFileError>()
        .expect("a ProvidersFileError");
    assert_eq!(typed.position, Some((3, 10)));
    assert_eq!(
        error.to_string(),
        format!("{}:3:10: {}", file.path().display(), typed.message)
    );

    let missing = Catalogue::builtin().with_file(Path::new("/nonexistent/providers.toml"));
    let message = format!("{:#}", missing.expect_err("no such file"));
    assert!(message.contains("/nonexistent/providers.toml"), "{message}");
}
