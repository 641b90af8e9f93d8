//! The redaction corpus: per rule a synthetic secret in context that must be cut out (and named
//! by its kind) and a near miss that must stay as it is; and a benign corpus (commit shas,
//! UUIDs, lockfiles, prose, paths, code) on which the false-positive rate is measured.
//!
//! The secrets are generated here from each format's alphabet and length, never real ones.

use super::rules;
use super::Redactor;

/// A deterministic pseudo-random string over `alphabet`.
fn rnd(alphabet: &str, n: usize, seed: u64) -> String {
    let a: Vec<char> = alphabet.chars().collect();
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            a[((x >> 33) as usize) % a.len()]
        })
        .collect()
}

const UPD: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const LOWD: &str = "abcdefghijklmnopqrstuvwxyz0123456789";
const ALNUM: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const URL: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
const B64: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const HEX: &str = "0123456789abcdef";
const LETTERS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const DIGITS: &str = "0123456789";

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// One corpus entry: the kind expected, the text with `{}` where the secret goes, the secret,
/// and a near miss that must come out unchanged.
struct Case {
    kind: &'static str,
    template: &'static str,
    secret: String,
    near_miss: &'static str,
}

fn case(
    kind: &'static str,
    template: &'static str,
    secret: String,
    near_miss: &'static str,
) -> Case {
    Case {
        kind,
        template,
        secret,
        near_miss,
    }
}

fn cases() -> Vec<Case> {
    let h = |n, s| rnd(HEX, n, s);
    let uuid = |s| {
        format!(
            "{}-{}-{}-{}-{}",
            h(8, s),
            h(4, s + 1),
            h(4, s + 2),
            h(4, s + 3),
            h(12, s + 4)
        )
    };
    vec![
        case("aws_access_key", "export AWS_ACCESS_KEY_ID={}", format!("AKIA{}", rnd(UPD, 16, 1)), "AKIA is the prefix of long-term AWS access key IDs"),
        case("aws_secret_access_key", "aws_secret_access_key = {}", rnd(B64, 40, 2), "aws_secret_access_key is read from ~/.aws/credentials"),
        case("aws_secret_access_key", "aws creds for prod: {} (rotate monthly)", rnd(B64, 40, 3), "aws deploy at commit 3f786850e387550fdab836ed7e6dc881de23001b done"),
        case("aws_bedrock_api_key", "BEDROCK={}", format!("ABSK{}", rnd(B64, 120, 4)), "ABSK keys are Bedrock API keys"),
        case("gcp_api_key", "loadMaps('{}')", format!("AIza{}", rnd(URL, 35, 5)), "AIza is how Google API keys begin"),
        case("google_oauth_client_secret", "client secret is {}", format!("GOCSPX-{}", rnd(URL, 28, 6)), "GOCSPX- prefixes Google client secrets"),
        case("google_oauth_access_token", "got {} from the metadata server", format!("ya29.{}", rnd(URL, 60, 7)), "ya29 is a prefix"),
        case("azure_ad_client_secret", "reply was {} ok", format!("{}8Q~{}", rnd(ALNUM, 3, 8), rnd(ALNUM, 34, 9)), "the Q~ operator"),
        case("azure_storage_key", "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={};EndpointSuffix=core.windows.net", format!("{}==", rnd(B64, 86, 10)), "AccountName=acct;EndpointSuffix=core.windows.net"),
        case("azure_sas_signature", "https://acct.blob.core.windows.net/c/b.txt?sv=2022-11-02&sr=b&sig={}", format!("{}%3D", rnd(ALNUM, 43, 11)), "https://acct.blob.core.windows.net/c/b.txt?sv=2022-11-02&sr=b"),
        case("alibaba_access_key_id", "id {}", format!("LTAI{}", rnd(ALNUM, 20, 12)), "LTAI keys"),
        case("digitalocean_token", "doctl auth init -t {}", format!("dop_v1_{}", h(64, 13)), "dop_v1_ tokens"),
        case("cloudflare_origin_ca_key", "key {}", format!("v1.0-{}-{}", h(24, 14), h(146, 15)), "version v1.0-beta"),
        case("heroku_api_key", "HEROKU={}", format!("HRKU-AA{}", rnd(URL, 58, 16)), "HRKU-AA is Heroku's prefix"),
        case("flyio_token", "fly {}", format!("fo1_{}", rnd(URL, 43, 17)), "fo1_ tokens"),
        case("scalingo_token", "scalingo {}", format!("tk-us-{}", rnd(URL, 48, 18)), "tk-us-east region"),
        case("openshift_token", "oc login --token {}", format!("sha256~{}", rnd(URL, 43, 19)), "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"),
        case("vault_token", "VAULT={}", format!("hvs.{}", rnd(URL, 95, 20)), "hvs. is the Vault service token prefix"),
        case("terraform_cloud_token", "tf {}", format!("{}.atlasv1.{}", rnd(ALNUM, 14, 21), rnd(URL, 65, 22)), "app.terraform.io/atlasv1 docs"),
        case("yandex_token", "yc {}", format!("AQVN{}", rnd(URL, 36, 23)), "AQVN prefix"),
        case("databricks_token", "databricks {}", format!("dapi{}", h(32, 24)), "dapi is the Databricks prefix"),
        case("clickhouse_secret", "ch {}", format!("4b1d{}", rnd(ALNUM, 38, 25)), "4b1d is a prefix"),
        case("planetscale_token", "pscale {}", format!("pscale_tkn_{}", rnd(URL, 40, 26)), "pscale_tkn_ tokens"),
        case("supabase_token", "supabase {}", format!("sbp_{}", h(40, 27)), "sbp_ tokens"),
        case("pulumi_token", "pulumi {}", format!("pul-{}", h(40, 28)), "pul-request"),
        case("doppler_token", "doppler {}", format!("dp.pt.{}", rnd(ALNUM, 43, 29)), "dp.pt. prefix"),
        case("dynatrace_token", "dt {}", format!("dt0c01.{}.{}", rnd(UPD, 24, 30), rnd(UPD, 64, 31)), "dt0c01. prefix"),
        case("grafana_token", "grafana {}", format!("glsa_{}_{}", rnd(ALNUM, 32, 32), h(8, 33)), "glsa_ prefix"),
        case("new_relic_key", "newrelic {}", format!("NRAK-{}", rnd(UPD, 27, 34)), "NRAK- prefix"),
        case("sentry_token", "sentry {}", format!("sntryu_{}", h(64, 35)), "sntryu_ prefix"),
        case("infracost_token", "infracost {}", format!("ico-{}", rnd(ALNUM, 32, 36)), "ico-file.png"),
        case("harness_token", "harness {}", format!("pat.{}.{}.{}", rnd(URL, 22, 37), rnd(ALNUM, 24, 38), rnd(ALNUM, 20, 39)), "pat.name"),
        case("prefect_token", "prefect {}", format!("pnu_{}", rnd(ALNUM, 36, 40)), "pnu_ prefix"),
        case("octopus_deploy_key", "octo {}", format!("API-{}", rnd(UPD, 26, 41)), "API-first design"),
        case("docker_hub_token", "docker login -p {}", format!("dckr_pat_{}", rnd(URL, 27, 42)), "dckr_pat_ prefix"),
        case("github_pat", "git clone with {}", format!("ghp_{}", rnd(ALNUM, 36, 43)), "ghp_ is the classic token prefix"),
        case("github_oauth_token", "oauth {}", format!("gho_{}", rnd(ALNUM, 36, 44)), "gho_ prefix"),
        case("github_app_token", "app {}", format!("ghs_{}", rnd(ALNUM, 36, 45)), "ghs_ prefix"),
        case("github_refresh_token", "refresh {}", format!("ghr_{}", rnd(ALNUM, 36, 46)), "ghr_ prefix"),
        case("github_fine_grained_pat", "fine {}", format!("github_pat_{}", rnd(ALNUM, 82, 47)), "github_pat_ prefix"),
        case("gitlab_token", "glab {}", format!("glpat-{}", rnd(URL, 20, 48)), "glpat- prefix"),
        case("gitlab_runner_registration_token", "runner {}", format!("GR1348941{}", rnd(URL, 20, 49)), "GR1348941 prefix"),
        case("gitlab_session_cookie", "Cookie: _gitlab_session={}", rnd(LOWD, 32, 50), "_gitlab_session= cookie name"),
        case("bitbucket_token", "bb {}", format!("ATBB{}", rnd(ALNUM, 32, 51)), "ATBB prefix"),
        case("atlassian_api_token", "jira {}", format!("ATATT3{}", rnd(URL, 186, 52)), "ATATT3 prefix"),
        case("npm_token", "//registry.npmjs.org/:_authToken={}", format!("npm_{}", rnd(ALNUM, 36, 53)), "npm_modules"),
        case("pypi_token", "twine upload -p {}", format!("pypi-AgEIcHlwaS5vcmc{}", rnd(URL, 70, 54)), "pypi-AgEIcHlwaS5vcmc prefix"),
        case("rubygems_token", "gem {}", format!("rubygems_{}", h(48, 55)), "rubygems_org"),
        case("clojars_token", "lein {}", format!("CLOJARS_{}", rnd(LOWD, 60, 56)), "CLOJARS_ prefix"),
        case("nuget_password", r#"<add key="ClearTextPassword" value="{}" />"#, rnd(ALNUM, 16, 57), r#"<add key="Username" value="bob" />"#),
        case("artifactory_token", "jfrog {}", format!("AKCp{}", rnd(ALNUM, 69, 58)), "AKCp prefix"),
        case("sidekiq_credentials", "BUNDLE_GEMS__CONTRIBSYS__COM={}", format!("{}:{}", h(8, 59), h(8, 60)), "BUNDLE_GEMS__CONTRIBSYS__COM is the Sidekiq Pro source"),
        case("anthropic_api_key", "ANTHROPIC={}", format!("sk-ant-api03-{}AA", rnd(URL, 93, 61)), "sk-ant- prefix"),
        case("openai_api_key", "OPENAI={}", format!("sk-proj-{}T3BlbkFJ{}", rnd(URL, 74, 62), rnd(URL, 74, 63)), "sk-proj- prefix"),
        case("huggingface_token", "hf {}", format!("hf_{}", rnd(LETTERS, 34, 64)), "hf_hub_download"),
        case("perplexity_api_key", "pplx {}", format!("pplx-{}", rnd(ALNUM, 48, 65)), "pplx- prefix"),
        case("groq_api_key", "groq {}", format!("gsk_{}", rnd(ALNUM, 52, 66)), "gsk_ prefix"),
        case("xai_api_key", "grok {}", format!("xai-{}", rnd(ALNUM, 80, 67)), "xai-sdk"),
        case("replicate_token", "replicate {}", format!("r8_{}", rnd(ALNUM, 37, 68)), "r8_ prefix"),
        case("stripe_secret_key", "stripe.api_key = '{}'", format!("sk_live_{}", rnd(ALNUM, 24, 69)), "sk_live_ is Stripe's live secret prefix"),
        case("stripe_restricted_key", "rk {}", format!("rk_live_{}", rnd(ALNUM, 24, 70)), "rk_live_ prefix"),
        case("stripe_webhook_secret", "hook {}", format!("whsec_{}", rnd(ALNUM, 32, 71)), "whsec_ prefix"),
        case("square_token", "square {}", format!("sq0atp-{}", rnd(URL, 22, 72)), "sq0atp- prefix"),
        case("shopify_token", "shop {}", format!("shpat_{}", h(32, 73)), "shpat_ prefix"),
        case("shippo_token", "shippo {}", format!("shippo_live_{}", h(40, 74)), "shippo_live_ prefix"),
        case("easypost_token", "ep {}", format!("EZAK{}", rnd(ALNUM, 54, 75)), "EZAK prefix"),
        case("duffel_token", "duffel {}", format!("duffel_test_{}", rnd(URL, 43, 76)), "duffel_test_ prefix"),
        case("flutterwave_key", "flw {}", format!("FLWSECK_TEST-{}-X", rnd("abcdefgh0123456789", 32, 77)), "FLWSECK_TEST- prefix"),
        case("adobe_client_secret", "adobe {}", format!("p8e-{}", rnd(ALNUM, 32, 78)), "p8e- prefix"),
        case("airtable_token", "airtable {}", format!("pat{}.{}", rnd(ALNUM, 14, 79), h(64, 80)), "path.to.file"),
        case("linear_api_key", "linear {}", format!("lin_api_{}", rnd(ALNUM, 40, 81)), "lin_api_ prefix"),
        case("notion_token", "notion {}", format!("ntn_{}{}", rnd(DIGITS, 11, 82), rnd(ALNUM, 35, 83)), "ntn_ prefix"),
        case("postman_api_key", "postman {}", format!("PMAK-{}-{}", h(24, 84), h(34, 85)), "PMAK- prefix"),
        case("readme_api_key", "readme {}", format!("rdme_{}", rnd(LOWD, 70, 86)), "rdme_ prefix"),
        case("typeform_token", "typeform {}", format!("tfp_{}", rnd(URL, 59, 87)), "tfp_ prefix"),
        case("frameio_token", "frame {}", format!("fio-u-{}", rnd(URL, 64, 88)), "fio-u- prefix"),
        case("mailchimp_api_key", "mc {}", format!("{}-us14", h(32, 89)), "a user in us-14"),
        case("mailgun_api_key", "mg {}", format!("key-{}", h(32, 90)), "key-value store"),
        case("mapbox_token", "mapbox {}", format!("sk.eyJ{}.{}", rnd(URL, 40, 91), rnd(URL, 22, 92)), "sk.eyJ prefix"),
        case("maxmind_license_key", "maxmind {}", format!("{}_{}_mmk", rnd(ALNUM, 6, 93), rnd(ALNUM, 29, 94)), "_mmk suffix"),
        case("sendgrid_api_key", "sendgrid {}", format!("SG.{}.{}", rnd(URL, 22, 95), rnd(URL, 43, 96)), "SG.1 release"),
        case("sendinblue_api_key", "brevo {}", format!("xkeysib-{}-{}", h(64, 97), rnd(ALNUM, 16, 98)), "xkeysib- prefix"),
        case("settlemint_token", "sm {}", format!("sm_pat_{}", rnd(ALNUM, 16, 99)), "sm_pat_ prefix"),
        case("twilio_api_key", "twilio {}", format!("SK{}", h(32, 100)), "SKU 12345"),
        case("twitter_bearer_token", "tw {}", format!("{}{}", "A".repeat(22), rnd(ALNUM, 90, 101)), "AAAA battery"),
        case("facebook_access_token", "fb {}", format!("EAAC{}", rnd(ALNUM, 120, 102)), "EAAC prefix"),
        case("age_secret_key", "age {}", format!("AGE-SECRET-KEY-1{}", rnd("QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L", 58, 103)), "AGE-SECRET-KEY-1 prefix"),
        case("onepassword_secret_key", "1p {}", format!("A3-{}-{}-{}-{}-{}", rnd(UPD, 6, 104), rnd(UPD, 11, 105), rnd(UPD, 5, 106), rnd(UPD, 5, 107), rnd(UPD, 5, 108)), "A3-paper size"),
        case("onepassword_service_token", "op {}", format!("ops_eyJ{}", rnd(B64, 260, 109)), "ops_eyJ prefix"),
        case("authress_key", "authress {}", format!("sc_{}.{}.acc_{}.{}", rnd(ALNUM, 10, 110), rnd(ALNUM, 5, 111), rnd(ALNUM, 16, 112), rnd(B64, 40, 113)), "sc_x.acc_y"),
        case("slack_bot_token", "SLACK={}", format!("xoxb-{}-{}-{}", rnd(DIGITS, 12, 114), rnd(DIGITS, 12, 115), rnd(ALNUM, 24, 116)), "xoxb- prefix"),
        case("slack_user_token", "slack {}", format!("xoxp-{}-{}-{}", rnd(DIGITS, 12, 117), rnd(DIGITS, 12, 118), rnd(ALNUM, 24, 119)), "xoxp- prefix"),
        case("slack_token", "slack app {}", format!("xapp-1-A{}-{}-{}", rnd(UPD, 10, 120), rnd(DIGITS, 13, 121), h(64, 122)), "xapp-1 prefix"),
        case("slack_webhook_url", "POST https://hooks.slack.com/services/{}", format!("T{}/B{}/{}", rnd(UPD, 8, 123), rnd(UPD, 8, 124), rnd(ALNUM, 24, 125)), "https://hooks.slack.com/services/"),
        case("discord_webhook_url", "https://discord.com/api/webhooks/123456789012345678/{}", rnd(URL, 68, 126), "https://discord.com/api/webhooks/ docs"),
        case("teams_webhook_url", "https://acme.webhook.office.com/webhookb2/{}", format!("{}@{}/IncomingWebhook/{}/{}", uuid(127), uuid(132), h(32, 137), uuid(138)), "acme.webhook.office.com"),
        case("telegram_bot_token", "telegram bot {}", format!("{}:AA{}", rnd(DIGITS, 10, 143), rnd(URL, 33, 144)), "telegram bot 12:30 meeting"),
        case("private_key", "key:\n{}\nend", format!("-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----", rnd(B64, 64, 145)), "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----"),
        case("private_key", "{}", format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----", rnd(B64, 70, 146)), "-----BEGIN CERTIFICATE-----"),
        case("private_key", "{}", format!("-----BEGIN EC PRIVATE KEY-----\n{}\n-----END EC PRIVATE KEY-----", rnd(B64, 70, 147)), "EC PRIVATE KEY is a PEM label"),
        case("private_key", "{}", format!("-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n{}\n-----END PGP PRIVATE KEY BLOCK-----", rnd(B64, 70, 148)), "-----BEGIN PGP PUBLIC KEY BLOCK-----"),
        case("private_key", "{}", format!("-----BEGIN ENCRYPTED PRIVATE KEY-----\n{}", rnd(B64, 70, 149)), "ENCRYPTED PRIVATE KEY"),
        case("private_key", "{}", format!("PuTTY-User-Key-File-3: ssh-ed25519\nPrivate-Lines: 1\n{}\nPrivate-MAC: {}", rnd(B64, 40, 150), h(64, 151)), "PuTTY-User-Key-File format"),
        case("jwt", "id_token={}", format!("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.{}", rnd(URL, 43, 152)), "eyJ is base64 for {\""),
        case("url_credentials", "DATABASE_URL=postgres://app:{}@db.internal:5432/app", format!("{}-P4ss", rnd(ALNUM, 12, 153)), "https://user@github.com/org/repo.git and https://example.com/a:b@c"),
        case("url_credentials", "remote: https://x-access-token:{}@github.com/o/r", format!("v1.{}", h(40, 154)), "mongodb://db.internal:27017/app"),
        case("authorization_header", "Authorization: {}", format!("Basic {}", b64("alice:wonderland")), "authorization is granted per role"),
        case("authorization_header", "Proxy-Authorization: {}", format!("Bearer {}", rnd(URL, 30, 155)), "Proxy-Authorization header"),
        case("authorization_header", "Authorization: {}", format!("Digest username=\"bob\", realm=\"x\", nonce=\"{}\", response=\"{}\"", h(16, 156), h(32, 157)), "see Authorization below"),
        case("bearer_token", "curl -H 'X-Auth: Bearer {}'", rnd(URL, 30, 158), "Bearer authentication is described in RFC 6750"),
        case("basic_auth", "credentials Basic {} sent", b64("carol:s3cret!"), "Basic authentication is simple"),
        case("curl_credentials", "curl -u admin:{} https://api.internal/", rnd(ALNUM, 12, 159), "curl -u is how curl takes a user"),
        case("cli_secret_flag", "mysqldump --password {} prod", format!("Tr0ub4{}", rnd(ALNUM, 6, 160)), "mysqldump --password-file /run/secrets/db prod"),
        case("kubernetes_secret", "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\ndata:\n  username: {}\n", b64("admin-user"), "apiVersion: v1\nkind: ConfigMap\ndata:\n  mode: fast\n"),
        case("generic_api_key", "DEEPSEEK={}", format!("sk-{}", rnd(ALNUM, 40, 161)), "sk-learn is scikit-learn"),
        case("password", "DB_PASSWORD={}", "postgres".into(), "DB_PASSWORD=${DB_PASSWORD}"),
        case("password", "  password: {}", format!("hunter{}", rnd(DIGITS, 2, 162)), "  password: required"),
        case("secret", r#"{"client_secret": "{}"}"#, "abc".into(), r#"{"client_secret": null}"#),
        case("api_key", "  api_key: {}", rnd(ALNUM, 20, 163), "api_key: str"),
        case("token", "GITLAB_TOKEN='{}'", rnd(ALNUM, 20, 164), "token = get_token()"),
        case("password", "jdbc:sqlserver://db;user=sa;password={};", format!("P@ss{}", rnd(ALNUM, 6, 165)), "PWD=/home/user"),
        case("secret_key", "ENCRYPTION_KEY={}", rnd(ALNUM, 32, 166), "sort_key: created_at_desc_2024_01"),
        case("twitter_credential", "TWITTER_CONSUMER={}", rnd(ALNUM, 25, 167), "TWITTER_HANDLE=jack"),
        case("token", "https://api.example.com/v1/items?access_token={}&page=2", rnd(ALNUM, 24, 168), "https://api.example.com/v1/items?page=2&max_tokens=10"),
    ]
}

fn redact(r: &Redactor, s: &str) -> String {
    let mut out = s.to_owned();
    r.redact_string(&mut out);
    out
}

#[test]
fn every_rule_redacts_its_sample_in_context_and_spares_its_near_miss() {
    let r = Redactor::default();
    let mut failures = Vec::new();
    for c in cases() {
        let text = c.template.replace("{}", &c.secret);
        let out = redact(&r, &text);
        let marker = format!("[REDACTED:{}]", c.kind);
        if out.contains(&c.secret) || !out.contains(&marker) {
            failures.push(format!("{}: {text:?} became {out:?}", c.kind));
        }
        let near = redact(&r, c.near_miss);
        if near != c.near_miss {
            failures.push(format!(
                "{} near miss: {:?} became {near:?}",
                c.kind, c.near_miss
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_built_in_rule_has_a_corpus_case() {
    let covered: Vec<&str> = cases().iter().map(|c| c.kind).collect();
    let missing: Vec<&str> = rules::all()
        .map(|r| r.kind)
        .filter(|k| *k != "secret_assignment" && !covered.contains(k))
        .collect();
    assert!(
        missing.is_empty(),
        "rules without a corpus case: {missing:?}"
    );
}

/// Ordinary text from tool results: none of it may change.
const BENIGN: &str = include_str!("benign.txt");

#[test]
fn benign_corpus_stays_readable() {
    let r = Redactor::default();
    let lines: Vec<&str> = BENIGN.lines().filter(|l| !l.trim().is_empty()).collect();
    let changed: Vec<(String, String)> = lines
        .iter()
        .map(|l| (l.to_string(), redact(&r, l)))
        .filter(|(a, b)| a != b)
        .collect();
    // The whole file as one result text, as a tool would return it.
    let big = super::RedactionConfig {
        max_value_bytes: 1 << 20,
        ..Default::default()
    }
    .build()
    .expect("builds");
    let whole = redact(&big, BENIGN);
    eprintln!(
        "benign corpus: {} of {} lines changed ({:.2}%)",
        changed.len(),
        lines.len(),
        100.0 * changed.len() as f64 / lines.len() as f64
    );
    assert!(changed.is_empty(), "false positives: {changed:#?}");
    let diff: Vec<(&str, &str)> = BENIGN
        .lines()
        .zip(whole.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert!(
        diff.is_empty() && whole.len() == BENIGN.len(),
        "the whole text changed: {diff:#?}"
    );
}
