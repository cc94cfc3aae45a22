//! Parser tests: real ClientHellos from rustls and Go, hand-built ones for the shapes those
//! clients do not send (GREASE, server_name late, lying lengths), HTTP/1.x requests, and
//! property tests on arbitrary and mutated bytes.

use std::process::Command;
use std::sync::Arc;

use proptest::prelude::*;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::{name_from_first_bytes, normalize_hostname, Named};

fn sni(name: &str) -> Named {
    Named::Sni(name.to_owned())
}

fn http_host(name: &str) -> Named {
    Named::HttpHost(name.to_owned())
}

// ---------------------------------------------------------------------------------------------
// ClientHello sources

/// The first flight of a rustls client (ring provider), taken from write_tls: no network.
fn rustls_client_hello(server_name: &str, configure: impl FnOnce(&mut ClientConfig)) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    configure(&mut config);
    let name = ServerName::try_from(server_name.to_owned()).expect("a valid server name");
    let mut connection =
        ClientConnection::new(Arc::new(config), name).expect("a client connection");
    let mut flight = Vec::new();
    while connection.wants_write() {
        connection
            .write_tls(&mut flight)
            .expect("write_tls into a Vec");
    }
    flight
}

/// Captured from Go 1.19's crypto/tls by testdata/go_client_hello (see its doc comment).
const GO_CLIENT_HELLO: &[u8] = include_bytes!("testdata/go1.19_client_hello_api.anthropic.com.bin");

/// A ClientHello handshake message (header included) with these extensions, in this order.
fn client_hello(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = vec![0x03, 0x03]; // legacy_version TLS 1.2
    body.extend([0x5a; 32]); // random
    body.push(32); // session id
    body.extend([0x11; 32]);
    let ciphers: [u16; 4] = [0x0a0a, 0x1301, 0x1302, 0xc02b]; // GREASE first, as Chrome
    body.extend(u16_bytes(ciphers.len() * 2));
    for cipher in ciphers {
        body.extend(cipher.to_be_bytes());
    }
    body.extend([1, 0]); // compression: null
    let mut block = Vec::new();
    for (kind, data) in extensions {
        block.extend(kind.to_be_bytes());
        block.extend(u16_bytes(data.len()));
        block.extend(data);
    }
    body.extend(u16_bytes(block.len()));
    body.extend(block);
    handshake_message(1, &body)
}

fn handshake_message(kind: u8, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).expect("small").to_be_bytes();
    let mut message = vec![kind, len[1], len[2], len[3]];
    message.extend(body);
    message
}

fn u16_bytes(n: usize) -> [u8; 2] {
    u16::try_from(n).expect("fits u16").to_be_bytes()
}

fn server_name_extension(name: &[u8]) -> (u16, Vec<u8>) {
    let mut entry = vec![0];
    entry.extend(u16_bytes(name.len()));
    entry.extend(name);
    let mut data = u16_bytes(entry.len()).to_vec();
    data.extend(entry);
    (0x0000, data)
}

/// The extensions of a recent Chrome, GREASE included, with server_name in the middle and a
/// large (post-quantum sized) key share before it.
fn chrome_like_extensions(name: &[u8], key_share_len: usize) -> Vec<(u16, Vec<u8>)> {
    vec![
        (0x3a3a, vec![]),                                         // GREASE, empty
        (0x0017, vec![]),                                         // extended_master_secret
        (0xff01, vec![0]),                                        // renegotiation_info
        (0x000a, vec![0, 6, 0xba, 0xba, 0x00, 0x1d, 0x00, 0x17]), // groups, GREASE first
        (0x000b, vec![1, 0]),                                     // ec_point_formats
        (0x0023, vec![]),                                         // session_ticket
        (0x0010, b"\x00\x0c\x02h2\x08http/1.1".to_vec()),         // ALPN
        (0x0005, vec![1, 0, 0, 0, 0]),                            // status_request
        (0x000d, vec![0, 4, 0x04, 0x03, 0x08, 0x04]),             // signature_algorithms
        (0x0033, key_share(key_share_len)),
        (0x002d, vec![1, 1]),                      // psk_key_exchange_modes
        (0x002b, vec![4, 0xda, 0xda, 0x03, 0x04]), // supported_versions, GREASE first
        server_name_extension(name),
        (0x001b, vec![2, 0, 2]),             // compress_certificate
        (0x4469, vec![0, 3, 2, b'h', b'2']), // ALPS
        (0xfafa, vec![0]),                   // GREASE with one byte, as Chrome sends last
        (0x0015, vec![0; 40]),               // padding
    ]
}

fn key_share(len: usize) -> Vec<u8> {
    let mut entry = vec![0x11, 0xec]; // X25519MLKEM768
    entry.extend(u16_bytes(len));
    entry.extend(std::iter::repeat_n(0x42, len));
    let mut data = u16_bytes(entry.len()).to_vec();
    data.extend(entry);
    data
}

/// `handshake` in TLS records whose fragments have these sizes (the last takes the rest).
fn records(handshake: &[u8], fragment_sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = handshake;
    for (i, &size) in fragment_sizes.iter().enumerate() {
        let size = if i + 1 == fragment_sizes.len() {
            rest.len()
        } else {
            size.min(rest.len())
        };
        let (fragment, tail) = rest.split_at(size);
        out.extend([0x16, 0x03, 0x01]);
        out.extend(u16_bytes(fragment.len()));
        out.extend(fragment);
        rest = tail;
    }
    out
}

fn one_record(handshake: &[u8]) -> Vec<u8> {
    records(handshake, &[handshake.len()])
}

/// Every prefix of a well-formed first flight is `NeedMore` until the server_name is complete,
/// and the name from then on: never another name, never `NotRecognized` on a valid beginning.
/// Returns the length at which the name appeared.
fn assert_every_truncation(flight: &[u8], expected: &Named) -> usize {
    let (Named::Sni(name) | Named::HttpHost(name)) = expected else {
        panic!("expected a name, not {expected:?}");
    };
    let first_named = (0..=flight.len())
        .find(|&cut| name_from_first_bytes(&flight[..cut]) == *expected)
        .unwrap_or_else(|| panic!("{expected:?} never appears"));
    for cut in 0..first_named {
        assert_eq!(
            name_from_first_bytes(&flight[..cut]),
            Named::NeedMore,
            "cut at {cut}"
        );
    }
    for cut in first_named..=flight.len() {
        assert_eq!(
            name_from_first_bytes(&flight[..cut]),
            *expected,
            "cut at {cut}"
        );
    }
    let seen = match expected {
        Named::Sni(_) => handshake_payload(&flight[..first_named]),
        _ => flight[..first_named].to_vec(),
    }
    .to_ascii_lowercase();
    assert!(
        seen.windows(name.len()).any(|w| w == name.as_bytes()),
        "named before its last byte was seen"
    );
    first_named
}

// ---------------------------------------------------------------------------------------------
// TLS: real clients

#[test]
fn rustls_client_hello_names_the_server() {
    let flight = rustls_client_hello("api.openai.com", |_| {});
    assert_eq!(flight[0], 0x16, "a handshake record");
    assert_eq!(name_from_first_bytes(&flight), sni("api.openai.com"));
    assert_every_truncation(&flight, &sni("api.openai.com"));
}

#[test]
fn rustls_client_hello_variants_name_the_server() {
    let flight = rustls_client_hello("API.Anthropic.com", |config| {
        config.resumption = rustls::client::Resumption::disabled();
    });
    assert_eq!(name_from_first_bytes(&flight), sni("api.anthropic.com"));

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("ring supports TLS 1.2")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    let name = ServerName::try_from("api.deepseek.com").expect("a valid server name");
    let mut connection = ClientConnection::new(Arc::new(config), name).expect("a connection");
    let mut flight = Vec::new();
    connection
        .write_tls(&mut flight)
        .expect("write_tls into a Vec");
    assert_eq!(name_from_first_bytes(&flight), sni("api.deepseek.com"));
}

#[test]
fn rustls_client_hello_over_many_small_records_names_the_server() {
    // max_fragment_size makes rustls itself split the ClientHello over several records.
    let flight = rustls_client_hello("api.klingai.com", |config| {
        config.max_fragment_size = Some(64);
    });
    let record_count = count_records(&flight);
    assert!(record_count > 2, "rustls sent {record_count} record(s)");
    assert_eq!(name_from_first_bytes(&flight), sni("api.klingai.com"));
    assert_every_truncation(&flight, &sni("api.klingai.com"));
}

fn count_records(mut flight: &[u8]) -> usize {
    let mut count = 0;
    while flight.len() >= 5 {
        let len = usize::from(u16::from_be_bytes([flight[3], flight[4]]));
        flight = &flight[(5 + len).min(flight.len())..];
        count += 1;
    }
    count
}

#[test]
fn rustls_client_hello_without_sni_is_not_recognized() {
    let flight = rustls_client_hello("api.openai.com", |config| config.enable_sni = false);
    assert_eq!(name_from_first_bytes(&flight), Named::NotRecognized);
}

#[test]
fn rustls_client_hello_for_an_ip_address_is_not_recognized() {
    // rustls sends no server_name for an IP address (RFC 6066 forbids literal addresses).
    let flight = rustls_client_hello("127.0.0.1", |_| {});
    assert_eq!(name_from_first_bytes(&flight), Named::NotRecognized);
}

#[test]
fn go_client_hello_capture_names_the_server() {
    assert_eq!(
        name_from_first_bytes(GO_CLIENT_HELLO),
        sni("api.anthropic.com")
    );
    assert_every_truncation(GO_CLIENT_HELLO, &sni("api.anthropic.com"));
}

#[test]
fn go_client_hello_made_now_names_the_server() {
    // Regenerates a capture with the Go toolchain (stdlib only, offline). Go is installed by
    // `cargo xtask setup`; without it, skip outside CI.
    if Command::new("go").arg("version").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "go is not installed under CI"
        );
        eprintln!("skipped: go is not on PATH (cargo xtask setup installs it)");
        return;
    }
    let program = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/naming/testdata/go_client_hello"
    );
    let output_dir = tempfile::tempdir().expect("a temporary directory");
    let output = output_dir.path().join("hello.bin");
    let mut go = Command::new("go");
    go.args(["run", "main.go", "-server-name", "api.x.ai", "-o"])
        .arg(&output)
        .current_dir(program)
        // Offline and with this Go: no module download, no toolchain switch.
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local");
    if std::env::var_os("GOCACHE").is_none() && std::env::var_os("HOME").is_none() {
        go.env("GOCACHE", output_dir.path().join("gocache"));
    }
    let run = go.output().expect("go runs");
    assert!(
        run.status.success(),
        "go run failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let flight = std::fs::read(&output).expect("the program wrote its capture");
    assert_eq!(name_from_first_bytes(&flight), sni("api.x.ai"));
    assert_every_truncation(&flight, &sni("api.x.ai"));
}

// ---------------------------------------------------------------------------------------------
// TLS: shapes real clients send that the two above do not

#[test]
fn grease_and_many_extensions_with_server_name_late() {
    let hello = client_hello(&chrome_like_extensions(b"api.mistral.ai", 1216));
    let flight = one_record(&hello);
    assert!(
        flight.len() > 1400,
        "a post-quantum sized ClientHello: {}",
        flight.len()
    );
    assert_eq!(
        name_from_first_bytes(&flight[..1024]),
        Named::NeedMore,
        "server_name is past 1 KiB"
    );
    assert_every_truncation(&flight, &sni("api.mistral.ai"));

    // With a classic key share server_name fits in the first kilobyte.
    let hello = client_hello(&chrome_like_extensions(b"api.mistral.ai", 32));
    let flight = one_record(&hello);
    let named_at = assert_every_truncation(&flight, &sni("api.mistral.ai"));
    assert!(
        named_at < 1024 && named_at < flight.len(),
        "named at {named_at} of {}",
        flight.len()
    );
}

#[test]
fn server_name_before_a_large_key_share_is_found_in_a_1_kib_prefix() {
    let mut extensions = chrome_like_extensions(b"api.groq.com", 1216);
    let at = extensions
        .iter()
        .position(|(kind, _)| *kind == 0)
        .expect("server_name");
    let server_name = extensions.remove(at);
    extensions.insert(1, server_name);
    let flight = one_record(&client_hello(&extensions));
    assert!(flight.len() > 1024);
    assert_eq!(name_from_first_bytes(&flight[..1024]), sni("api.groq.com"));
}

#[test]
fn client_hello_split_across_two_records_at_every_point() {
    let hello = client_hello(&chrome_like_extensions(b"dashscope.aliyuncs.com", 32));
    for split in 1..hello.len() {
        let flight = records(&hello, &[split, hello.len() - split]);
        assert_eq!(
            name_from_first_bytes(&flight),
            sni("dashscope.aliyuncs.com"),
            "split {split}"
        );
    }
    // One split point, every truncation of the result.
    let flight = records(&hello, &[100, hello.len() - 100]);
    assert_every_truncation(&flight, &sni("dashscope.aliyuncs.com"));
}

#[test]
fn client_hello_in_many_records_including_a_one_byte_one() {
    let hello = client_hello(&[server_name_extension(b"api.x.ai")]);
    let flight = records(&hello, &[1, 3, 50, 1, 7, 1000]);
    assert_eq!(count_records(&flight), 6);
    assert_every_truncation(&flight, &sni("api.x.ai"));
}

#[test]
fn another_record_type_before_the_hello_is_complete_is_not_recognized() {
    let hello = client_hello(&chrome_like_extensions(b"api.x.ai", 32));
    let mut flight = records(&hello, &[60, hello.len() - 60]);
    flight.truncate(5 + 60);
    assert_eq!(name_from_first_bytes(&flight), Named::NeedMore);
    flight.extend([0x14, 0x03, 0x03, 0x00, 0x01, 0x01]); // ChangeCipherSpec
    assert_eq!(name_from_first_bytes(&flight), Named::NotRecognized);
    // After a complete ClientHello, another record changes nothing.
    let mut flight = one_record(&hello);
    flight.extend([0x14, 0x03, 0x03, 0x00, 0x01, 0x01]);
    assert_eq!(name_from_first_bytes(&flight), sni("api.x.ai"));
}

#[test]
fn server_name_is_lowercased_and_other_name_types_skipped() {
    let name = b"Api.OpenAI.COM";
    let mut list = vec![7, 0, 3, b'x', b'y', b'z']; // an unknown name type first
    list.extend([0]);
    list.extend(u16_bytes(name.len()));
    list.extend(name);
    let mut data = u16_bytes(list.len()).to_vec();
    data.extend(list);
    let flight = one_record(&client_hello(&[(0x000a, vec![0, 2, 0, 0x1d]), (0, data)]));
    assert_eq!(name_from_first_bytes(&flight), sni("api.openai.com"));
}

#[test]
fn client_hellos_without_a_usable_name_are_not_recognized() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "no server_name",
            client_hello(&[(0x000a, vec![0, 2, 0, 0x1d]), (0x0017, vec![])]),
        ),
        ("no extensions at all", {
            let mut hello = client_hello(&[]);
            hello.truncate(hello.len() - 2); // drop the empty extensions block
            let body_len = hello.len() - 4;
            hello[1..4]
                .copy_from_slice(&u32::try_from(body_len).expect("small").to_be_bytes()[1..]);
            hello
        }),
        ("empty name", client_hello(&[server_name_extension(b"")])),
        (
            "trailing dot",
            client_hello(&[server_name_extension(b"api.openai.com.")]),
        ),
        (
            "a space",
            client_hello(&[server_name_extension(b"api openai.com")]),
        ),
        (
            "a slash",
            client_hello(&[server_name_extension(b"api.openai.com/v1")]),
        ),
        (
            "NUL",
            client_hello(&[server_name_extension(b"api.openai.com\0evil.com")]),
        ),
        (
            "empty label",
            client_hello(&[server_name_extension(b"api..com")]),
        ),
        (
            "label of 64",
            client_hello(&[server_name_extension(&[b'a'; 64])]),
        ),
        ("server hello", {
            let mut hello = client_hello(&[server_name_extension(b"api.openai.com")]);
            hello[0] = 2;
            hello
        }),
    ];
    for (what, hello) in cases {
        assert_eq!(
            name_from_first_bytes(&one_record(&hello)),
            Named::NotRecognized,
            "{what}"
        );
    }
}

#[test]
fn lying_lengths_are_not_recognized() {
    let hello = client_hello(&[server_name_extension(b"api.openai.com")]);
    let flight = one_record(&hello);
    let name_at = flight
        .windows(14)
        .position(|w| w == b"api.openai.com")
        .expect("the name");
    // The server_name's own length (the 2 bytes before the name) claims more than its list.
    let mut long_name = flight.clone();
    long_name[name_at - 1] += 1;
    assert_eq!(name_from_first_bytes(&long_name), Named::NotRecognized);
    // The extension's length runs past the extensions block.
    let ext_len_at = name_at - 9;
    let mut long_extension = flight.clone();
    long_extension[ext_len_at] = 0x40;
    assert_eq!(name_from_first_bytes(&long_extension), Named::NotRecognized);
    // A session id longer than 32 bytes.
    let mut long_session = flight.clone();
    long_session[5 + 4 + 2 + 32] = 33;
    assert_eq!(name_from_first_bytes(&long_session), Named::NotRecognized);
    // An odd cipher suites length.
    let mut odd_ciphers = flight.clone();
    odd_ciphers[5 + 4 + 2 + 32 + 1 + 32 + 1] = 7;
    assert_eq!(name_from_first_bytes(&odd_ciphers), Named::NotRecognized);
}

#[test]
fn bad_record_headers_are_not_recognized() {
    let hello = client_hello(&[server_name_extension(b"api.openai.com")]);
    let flight = one_record(&hello);
    let with = |index: usize, byte: u8| {
        let mut bytes = flight.clone();
        bytes[index] = byte;
        name_from_first_bytes(&bytes)
    };
    assert_eq!(with(1, 2), Named::NotRecognized, "major version 2");
    assert_eq!(with(2, 9), Named::NotRecognized, "minor version 9");
    assert_eq!(
        with(3, 0x41),
        Named::NotRecognized,
        "record longer than 2^14"
    );
    let empty_record = [0x16, 0x03, 0x01, 0x00, 0x00];
    assert_eq!(name_from_first_bytes(&empty_record), Named::NotRecognized);
    assert_eq!(name_from_first_bytes(&[0x16]), Named::NeedMore);
    assert_eq!(name_from_first_bytes(&[0x16, 0x03]), Named::NeedMore);
    assert_eq!(
        name_from_first_bytes(&[0x16, 0x03, 0x01, 0x40]),
        Named::NeedMore
    );
    assert_eq!(
        name_from_first_bytes(&[0x16, 0x03, 0x01, 0x41]),
        Named::NotRecognized
    );
}

#[test]
fn non_tls_bytes_are_not_recognized() {
    let cases: &[(&str, &[u8])] = &[
        // An SSLv2-format ClientHello: two-byte length with the high bit set, then type 1.
        (
            "sslv2 hello",
            b"\x80\x2e\x01\x03\x01\x00\x15\x00\x00\x00\x10\x07\x00\xc0\x05\x00\x80",
        ),
        ("ssh banner", b"SSH-2.0-OpenSSH_9.6\r\n"),
        ("tls alert", b"\x15\x03\x03\x00\x02\x02\x28"),
        ("application data", b"\x17\x03\x03\x00\x05hello"),
        ("redis", b"*1\r\n$4\r\nPING\r\n"),
        ("zeros", &[0; 64]),
        ("high bytes", &[0xff; 64]),
    ];
    for (what, bytes) in cases {
        assert_eq!(name_from_first_bytes(bytes), Named::NotRecognized, "{what}");
    }
}

#[test]
fn every_single_byte_corruption_gives_the_name_or_none() {
    // 256 values at every position, with the name whole in one record or straddling two: a
    // corrupted length must never pass for a shorter or longer name.
    let hello = client_hello(&chrome_like_extensions(b"api.openai.com", 32));
    let name_at = hello
        .windows(14)
        .position(|w| w == b"api.openai.com")
        .expect("the name");
    for split in [hello.len(), name_at + 5] {
        let flight = records(&hello, &[split, hello.len()]);
        for at in 0..flight.len() {
            let mut corrupted = flight.clone();
            for byte in 0..=255u8 {
                corrupted[at] = byte;
                if let Named::Sni(name) = name_from_first_bytes(&corrupted) {
                    assert_eq!(name.len(), 14, "byte {at} set to {byte:#04x} gave {name:?}");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.x

#[test]
fn host_header_in_any_case_with_or_without_port() {
    let cases: &[(&[u8], &str)] = &[
        (
            b"GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\n\r\n",
            "api.openai.com",
        ),
        (
            b"POST /v1/messages HTTP/1.1\r\nhost: api.anthropic.com\r\nContent-Length: 2\r\n\r\n{}",
            "api.anthropic.com",
        ),
        (
            b"POST / HTTP/1.1\r\nHOST:API.Mistral.AI\r\n\r\n",
            "api.mistral.ai",
        ),
        (
            b"GET / HTTP/1.1\r\nHoSt: \t 127.0.0.12:18080 \r\n\r\n",
            "127.0.0.12",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: api.groq.com:\r\n\r\n",
            "api.groq.com",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: api.groq.com.:8080\r\n\r\n",
            "api.groq.com",
        ),
        (b"GET / HTTP/1.0\r\nHost: api.x.ai\r\n\r\n", "api.x.ai"),
        (
            b"DELETE /v1/files/1 HTTP/1.1\nHost: api.openai.com\n\n",
            "api.openai.com",
        ),
    ];
    for (request, host) in cases {
        assert_eq!(
            name_from_first_bytes(request),
            http_host(host),
            "{}",
            request.escape_ascii()
        );
    }
}

#[test]
fn host_after_other_headers_including_a_bearer_key() {
    let request = b"POST /v1/chat/completions HTTP/1.1\r\n\
        User-Agent: Go-http-client/1.1\r\n\
        Content-Length: 120\r\n\
        Authorization: Bearer sk-proj-not-a-real-key\r\n\
        Content-Type: application/json\r\n\
        Host: api.deepseek.com\r\n\
        Accept-Encoding: gzip\r\n\r\n";
    assert_eq!(
        name_from_first_bytes(request),
        http_host("api.deepseek.com")
    );
    assert_every_truncation(request, &http_host("api.deepseek.com"));
}

#[test]
fn absolute_form_and_connect_targets_name_the_host() {
    let cases: &[(&[u8], &str)] = &[
        (
            b"GET http://api.openai.com/v1/models HTTP/1.1\r\n\r\n",
            "api.openai.com",
        ),
        (
            b"GET HTTP://user:pw@API.openai.com:8080?q=1 HTTP/1.1\r\n",
            "api.openai.com",
        ),
        // The target's authority wins over Host (RFC 9112 section 3.2.2).
        (
            b"GET https://api.x.ai/v1 HTTP/1.1\r\nHost: other.example\r\n\r\n",
            "api.x.ai",
        ),
        (
            b"CONNECT api.anthropic.com:443 HTTP/1.1\r\nHost: api.anthropic.com:443\r\n\r\n",
            "api.anthropic.com",
        ),
    ];
    for (request, host) in cases {
        assert_eq!(
            name_from_first_bytes(request),
            http_host(host),
            "{}",
            request.escape_ascii()
        );
    }
}

#[test]
fn requests_without_a_usable_host_are_not_recognized() {
    let cases: &[(&str, &[u8])] = &[
        ("no Host", b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"),
        ("HTTP/1.0 without Host", b"GET / HTTP/1.0\r\n\r\n"),
        (
            "IPv6 literal",
            b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
        ),
        (
            "space before colon",
            b"GET / HTTP/1.1\r\nHost : api.openai.com\r\n\r\n",
        ),
        (
            "folded header",
            b"GET / HTTP/1.1\r\n Host: api.openai.com\r\n\r\n",
        ),
        (
            "not a hostname",
            b"GET / HTTP/1.1\r\nHost: api openai.com\r\n\r\n",
        ),
        (
            "bad port",
            b"GET / HTTP/1.1\r\nHost: api.openai.com:https\r\n\r\n",
        ),
        ("empty Host", b"GET / HTTP/1.1\r\nHost: \r\n\r\n"),
        (
            "control byte",
            b"GET / HTTP/1.1\r\nX-A: \x01\r\nHost: api.openai.com\r\n\r\n",
        ),
        (
            "lowercase method",
            b"get / HTTP/1.1\r\nHost: api.openai.com\r\n\r\n",
        ),
        (
            "unknown method",
            b"BREW / HTTP/1.1\r\nHost: api.openai.com\r\n\r\n",
        ),
        ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        ("HTTP/2 preface start", b"PR"),
        (
            "HTTP/2.0 version",
            b"GET / HTTP/2.0\r\nHost: api.openai.com\r\n\r\n",
        ),
        ("no version", b"GET /\r\nHost: api.openai.com\r\n\r\n"),
        ("ftp target", b"GET ftp://api.openai.com/ HTTP/1.1\r\n\r\n"),
    ];
    for (what, request) in cases {
        assert_eq!(
            name_from_first_bytes(request),
            Named::NotRecognized,
            "{what}"
        );
    }
}

#[test]
fn only_the_first_request_counts() {
    let pipelined =
        b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\nGET / HTTP/1.1\r\nHost: api.openai.com\r\n\r\n";
    assert_eq!(name_from_first_bytes(pipelined), Named::NotRecognized);
    let two =
        b"GET / HTTP/1.1\r\nHost: api.openai.com\r\n\r\nGET / HTTP/1.1\r\nHost: b.example\r\n\r\n";
    assert_eq!(name_from_first_bytes(two), http_host("api.openai.com"));
}

#[test]
fn a_host_header_cut_at_the_1_kib_boundary_is_need_more() {
    let mut request = b"POST /v1/chat/completions HTTP/1.1\r\n".to_vec();
    let filler_len = 1024 - request.len() - "X-Pad: \r\n".len() - "Host: api.open".len();
    request.extend(b"X-Pad: ");
    request.extend(std::iter::repeat_n(b'p', filler_len));
    request.extend(b"\r\nHost: api.openai.com\r\n\r\n");
    assert_eq!(&request[1024 - 14..1024], b"Host: api.open");
    assert_eq!(name_from_first_bytes(&request[..1024]), Named::NeedMore);
    assert_eq!(name_from_first_bytes(&request), http_host("api.openai.com"));
    assert_every_truncation(&request, &http_host("api.openai.com"));
}

#[test]
fn beginnings_of_requests_need_more() {
    for prefix in [
        &b""[..],
        b"G",
        b"GE",
        b"GET",
        b"GET ",
        b"P",
        b"PO",
        b"POST /v1",
        b"OPTIONS * HTTP/1.1\r",
    ] {
        assert_eq!(
            name_from_first_bytes(prefix),
            Named::NeedMore,
            "{}",
            prefix.escape_ascii()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Properties

/// What every answer must satisfy: a name is a canonical hostname whose bytes appear, in one
/// piece and up to ASCII case, in the input (HTTP) or in the payload of its leading handshake
/// records (TLS: a name may straddle two records).
fn check_invariants(input: &[u8]) -> Result<(), TestCaseError> {
    let (name, haystack) = match name_from_first_bytes(input) {
        Named::Sni(name) => (name, handshake_payload(input)),
        Named::HttpHost(name) => (name, input.to_vec()),
        Named::NeedMore | Named::NotRecognized => return Ok(()),
    };
    prop_assert_eq!(normalize_hostname(name.as_bytes()), Some(name.clone()));
    let haystack = haystack.to_ascii_lowercase();
    prop_assert!(
        haystack.windows(name.len()).any(|w| w == name.as_bytes()),
        "{name:?} is not in the input"
    );
    Ok(())
}

/// The payload of the leading handshake records, headers dropped (a naive walk, on purpose
/// not the parser's).
fn handshake_payload(mut input: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    while input.len() >= 5 && input[0] == 0x16 {
        let len = usize::from(u16::from_be_bytes([input[3], input[4]]));
        let end = (5 + len).min(input.len());
        payload.extend(&input[5..end]);
        input = &input[end..];
    }
    payload
}

/// Applies (position, byte) overwrites and a truncation to a valid first flight.
fn mutate(mut bytes: Vec<u8>, overwrites: &[(usize, u8)], keep: usize) -> Vec<u8> {
    if !bytes.is_empty() {
        for &(at, byte) in overwrites {
            let at = at % bytes.len();
            bytes[at] = byte;
        }
    }
    bytes.truncate(keep);
    bytes
}

fn proptest_config() -> ProptestConfig {
    ProptestConfig {
        cases: 4096,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn arbitrary_bytes_never_panic_nor_invent_a_name(
        input in prop::collection::vec(any::<u8>(), 0..1500),
    ) {
        check_invariants(&input)?;
    }

    #[test]
    fn arbitrary_bytes_after_a_tls_record_header(
        len in 0u16..0x4100,
        tail in prop::collection::vec(any::<u8>(), 0..1200),
    ) {
        let mut input = vec![0x16, 0x03, 0x01];
        input.extend(len.to_be_bytes());
        input.extend(tail);
        check_invariants(&input)?;
    }

    #[test]
    fn mutated_client_hellos_never_give_a_wrong_name(
        overwrites in prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        keep in 0usize..1400,
        split in 1usize..400,
    ) {
        let hello = client_hello(&chrome_like_extensions(b"api.openai.com", 32));
        let flight = records(&hello, &[split, hello.len()]);
        let input = mutate(flight, &overwrites, keep);
        check_invariants(&input)?;
        if let Named::Sni(name) = name_from_first_bytes(&input) {
            // A flipped byte may fall in the name itself, but not beyond its characters.
            prop_assert_eq!(name.len(), "api.openai.com".len());
        }
    }

    #[test]
    fn mutated_requests_never_give_a_wrong_name(
        overwrites in prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        keep in 0usize..200,
        host in "[a-zA-Z0-9.:\\-\\[\\] ]{0,30}",
    ) {
        let request = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nAuthorization: Bearer k\r\nHost: {host}\r\n\r\n"
        );
        let input = mutate(request.into_bytes(), &overwrites, keep);
        check_invariants(&input)?;
    }
}
