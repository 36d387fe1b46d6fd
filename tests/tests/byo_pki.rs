//! Bring-your-own PKI: certificates made with the `openssl` command line, as an operator
//! with an existing CA would, work for both the controller and the agent.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tests::harness::{AgentTls, TestAgent, TestController, init, vars};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command is installed (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Signs `name.csr` with the CA into `name.pem` with the given extensions.
fn sign(dir: &Path, name: &str, extensions: &str) {
    std::fs::write(dir.join(format!("{name}.ext")), extensions).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "30",
            "-sha256",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

#[tokio::test]
async fn openssl_made_certificates_work_end_to_end() {
    init();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "30",
            "-subj",
            "/O=Example/CN=Example BYO CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    // The controller: an EC key, SANs for loopback.
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=controller.example",
        ],
    );
    sign(
        dir,
        "server",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    );
    // The agent: an RSA key, identity in the CN only.
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "agent.key",
            "-out",
            "agent.csr",
            "-subj",
            "/O=Example/CN=rack-3-arm",
        ],
    );
    sign(dir, "agent", "extendedKeyUsage=clientAuth\n");

    let controller = TestController::start(vars(&[
        ("STATE_DIR", dir.join("state").display().to_string()),
        ("TLS_CA_FILE", dir.join("ca.pem").display().to_string()),
        (
            "TLS_CERT_FILE",
            dir.join("server.pem").display().to_string(),
        ),
        ("TLS_KEY_FILE", dir.join("server.key").display().to_string()),
    ]))
    .await;
    let agent = TestAgent::start(
        &controller.grpc_url(),
        &AgentTls {
            ca: dir.join("ca.pem"),
            cert: dir.join("agent.pem"),
            key: dir.join("agent.key"),
        },
        &[("AGENT_ARCH", "arm64")],
    );
    let status = agent
        .wait_status(Duration::from_secs(15), "connected", |s| s.connected)
        .await;
    assert_eq!(status.agent_name.as_deref(), Some("rack-3-arm"));
    let listed = controller
        .agent("rack-3-arm")
        .await
        .expect("listed under its CN");
    assert_eq!(listed["arch"], "arm64");
    assert_eq!(listed["connected"], true);
}
