//! The tenant-escape suite: every signed-in user has a shell and is
//! hostile. Each case signs in as alice, opens her terminal through
//! slotgate's WebSocket (a real slot: bubblewrap, pasta, tmux, ttyd as her
//! own uid), tries one way out, and asserts the refusal; the last cases
//! check that the same user can still do their work.
//!
//! CI runs as root, so this is the root install layout (a uid per owner).
//! In the unprivileged layout (`supervisor.users = "shared"`) every slot is
//! the daemon's uid: the cases about other users' files and processes do
//! not hold there, which is what `slotctl doctor` says.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use identity::access::Role;
use slotgate_tests::accounts::{self, user_session};
use slotgate_tests::gateway::{Options, Slotgate, Stream};
use slotgate_tests::ttyd::TtydClient;
use slotgate_tests::TestEnv;

const T: Duration = Duration::from_secs(20);

/// A small template with tight caps, for the resource cases.
const CAPPED: &str = r#"
description = "shell with tight caps"
command = ["bash", "--login"]
cwd = "{workdir}"
[sandbox]
bwrap = true
network = "egress"
[limits]
memory = "96M"
pids = 48
"#;

struct Tenants {
    env: TestEnv,
    gw: Slotgate,
    tty: TtydClient<Stream>,
    /// alice's and bob's uids.
    alice: u32,
    bob: u32,
    /// Commands run so far (numbers their markers).
    runs: u32,
}

/// alice and bob, each with a `shell` slot (the shipped template:
/// bubblewrap, egress network); alice's terminal open through the gateway.
async fn tenants(alice_template: &str) -> Tenants {
    tenants_in(TestEnv::new(&[("capped", CAPPED)], ""), alice_template).await
}

async fn tenants_in(mut env: TestEnv, alice_template: &str) -> Tenants {
    env.start_daemon().await;
    let a = env.create_online("alice", alice_template).await;
    let b = env.create_online("bob", "shell").await;
    let gw = Slotgate::start(
        &env.config,
        Options {
            extra: "auth = \"local\"\n".into(),
            ..Options::default()
        },
    )
    .await
    .expect("slotgate starts");
    let cookie = user_session(&gw, "alice", Role::User).await;
    user_session(&gw, "bob", Role::User).await;
    let tty = accounts::tty(&gw, "alice", &[("Cookie", &cookie)])
        .await
        .expect("alice's terminal through the gateway");
    let mut t = Tenants {
        alice: a.uid.expect("alice's uid"),
        bob: b.uid.expect("bob's uid"),
        env,
        gw,
        tty,
        runs: 0,
    };
    // The shell is up once it runs a command.
    t.run("true").await;
    t
}

/// What one command printed and its exit status.
struct Ran {
    out: String,
    rc: i32,
}

impl Tenants {
    /// Type `cmd` into alice's terminal; wait for it to finish.
    async fn run(&mut self, cmd: &str) -> Ran {
        // Markers the shell computes, unique to this run, so neither the
        // echo of the typed line nor a redraw of earlier output (tmux
        // repaints the screen now and then) can be mistaken for them.
        self.runs += 1;
        let n = 1000 * self.runs;
        let (open, close) = (format!("<<{}>", n + 1), format!("<{}>> rc=", n + 2));
        let from = self.tty.screen.len();
        self.tty
            .input(&format!(
                "echo \"<<$(({n}+1))>\"; {cmd}; echo \"<$(({n}+2))>> rc=$?.\"\r"
            ))
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + T;
        loop {
            self.tty
                .expect_from(from, &close, T)
                .await
                .unwrap_or_else(|e| panic!("{cmd}: {e}"));
            let screen = strip_ansi(&self.tty.screen[from..]);
            let end = screen.find(&close).expect("end marker");
            let tail = &screen[end + close.len()..];
            let rc: String = tail.chars().take_while(|c| c.is_ascii_digit()).collect();
            if tail[rc.len()..].starts_with('.') {
                let start = screen.find(&open).map(|i| i + open.len()).unwrap_or(0);
                return Ran {
                    out: screen[start.min(end)..end].to_string(),
                    rc: rc.parse().unwrap(),
                };
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{cmd}: no status in {screen:?}"
            );
            self.tty.drain_for(Duration::from_millis(20)).await;
        }
    }

    /// `cmd` must fail; returns what it printed.
    async fn refused(&mut self, cmd: &str) -> String {
        let r = self.run(cmd).await;
        assert_ne!(
            r.rc,
            0,
            "{cmd} succeeded inside the slot: {:?}",
            strip_ansi(&self.tty.screen)
        );
        r.out
    }

    fn data(&self, rel: &str) -> String {
        self.env.path(&format!("data/{rel}")).display().to_string()
    }

    fn run_dir(&self, rel: &str) -> String {
        self.env.path(&format!("run/{rel}")).display().to_string()
    }

    /// A process of bob's slot as the host sees it (his tmux server).
    fn bobs_pid(&self) -> u32 {
        let out = Command::new("pgrep")
            .args(["-u", &self.bob.to_string(), "-f", "tmux -D"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .expect("bob's tmux server runs")
    }
}

/// The terminal's output without escape sequences and carriage returns.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    for c in chars.by_ref() {
                        if c == '\x07' || c == '\x1b' {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// What a confined process reports about itself: uid, capabilities,
/// no_new_privs, and what it sees of slotgate's data directory.
fn confinement_probe(data_dir: &str) -> String {
    format!(
        "echo uid=$(id -u).; grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs):' /proc/self/status; \
         echo data=$(ls -A {data_dir} | tr '\\n' ,)"
    )
}

/// The probe's lines mean: the slot's uid, no capability at all,
/// no_new_privs, and nothing of slotgate's data but the sandboxes' mount
/// point.
fn assert_confined(text: &str, uid: u32) {
    // The terminal draws tabs as cursor moves: compare without blanks.
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let text = compact.as_str();
    assert!(text.contains(&format!("uid={uid}.")), "{text}");
    for cap in ["CapEff", "CapPrm", "CapBnd"] {
        assert!(
            text.contains(&format!("{cap}:0000000000000000")),
            "{cap} not empty: {text}"
        );
    }
    assert!(text.contains("NoNewPrivs:1"), "{text}");
    assert!(text.contains("data=users,"), "{text}");
    for secret in ["identity.db", "state.db", "activity.db", "logs"] {
        assert!(!text.contains(secret), "{secret} visible: {text}");
    }
}

#[tokio::test]
async fn the_first_shell_runs_as_the_owner_with_no_capabilities() {
    let mut t = tenants("shell").await;
    assert_ne!(t.alice, 0);
    assert_ne!(t.alice, t.bob, "two owners share a uid");
    let probe = confinement_probe(&t.data(""));
    let r = t.run(&probe).await;
    assert_confined(&r.out, t.alice);
}

#[tokio::test]
async fn ctrl_b_c_opens_a_window_as_confined_as_the_first() {
    let mut t = tenants("shell").await;
    // Ctrl-b c: a new window, then the probe in it.
    t.tty.input("\x02c").await.unwrap();
    t.tty.drain_for(Duration::from_millis(300)).await;
    let probe = confinement_probe(&t.data(""));
    let r = t
        .run(&format!("echo window=$(tmux display -p '#I'); {probe}"))
        .await;
    assert!(r.out.contains("window=1"), "not in a new window: {}", r.out);
    assert_confined(&r.out, t.alice);
    // Ctrl-b %: a split pane, the same.
    t.tty.input("\x02%").await.unwrap();
    t.tty.drain_for(Duration::from_millis(300)).await;
    let r = t
        .run(&format!("echo pane=$(tmux display -p '#P'); {probe}"))
        .await;
    assert!(r.out.contains("pane=1"), "not in a new pane: {}", r.out);
    assert_confined(&r.out, t.alice);
}

/// Commands typed at tmux's prompt (`Ctrl-b :`) run in the tmux server:
/// `run-shell` and `new-window 'cmd'` write what they see to a file the
/// test reads from the host.
#[tokio::test]
async fn tmux_prompt_run_shell_and_new_window_are_confined() {
    let mut t = tenants("shell").await;
    let workdir = t.data("users/alice/workdir");
    let probe = confinement_probe(&t.data(""));
    for (name, cmd) in [
        (
            "run-shell",
            format!("run-shell \"({probe}) > {workdir}/run-shell.txt\""),
        ),
        (
            "new-window",
            format!("new-window \"({probe}) > {workdir}/new-window.txt\""),
        ),
    ] {
        t.tty.input("\x02:").await.unwrap();
        t.tty.drain_for(Duration::from_millis(200)).await;
        t.tty.input(&format!("{cmd}\r")).await.unwrap();
        let file = Path::new(&workdir).join(format!("{name}.txt"));
        slotgate_tests::wait_for(&format!("{name}'s output"), T, || {
            let done = std::fs::read_to_string(&file).is_ok_and(|s| s.contains("data="));
            async move { done }
        })
        .await;
        let text = std::fs::read_to_string(&file).unwrap();
        assert_confined(&text, t.alice);
        // Written as alice, in her sandbox.
        assert_eq!(std::fs::metadata(&file).unwrap().uid(), t.alice);
    }
    // The shell's own `tmux` (through $TMUX) reaches the same server.
    let r = t
        .run("tmux new-window -d 'sleep 30' && tmux list-windows | wc -l")
        .await;
    assert_eq!(r.rc, 0, "{}", r.out);
}

#[tokio::test]
async fn key_bindings_the_config_leaves_run_inside_the_sandbox() {
    let mut t = tenants("shell").await;
    // Every binding runs a tmux command in the one server; the server is in
    // the sandbox, so the question is only whether it is: its pid 1 is
    // bubblewrap's, and it sees only its own sandbox's processes.
    let r = t
        .run("tmux list-keys | wc -l; echo server=$(tmux display -p '#{pid}'); ps -e -o pid=,comm= | tr '\\n' ' '")
        .await;
    let keys: u32 = r.out.split_whitespace().next().unwrap().parse().unwrap();
    assert!(keys > 50, "{}", r.out);
    assert!(
        !r.out.contains("ttyd"),
        "ttyd visible from the session: {}",
        r.out
    );
    assert!(!r.out.contains("slotctl"), "{}", r.out);
    let server: u32 = r
        .out
        .split("server=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(
        server < 10,
        "tmux server pid {server} is not inside a fresh pid namespace"
    );
}

#[tokio::test]
async fn another_users_sandbox_is_out_of_reach() {
    let mut t = tenants("shell").await;
    let bobs = t.data("users/bob/home/secret.txt");
    std::fs::write(&bobs, "bob's secret").unwrap();
    // By path: not even there.
    t.refused(&format!("cat {bobs}")).await;
    t.refused(&format!("ls {}", t.data("users/bob"))).await;
    let r = t.run(&format!("ls -A {}", t.data("users"))).await;
    assert_eq!(r.out.trim(), "alice", "{}", r.out);
    // Through /proc: bob's processes do not exist in alice's pid namespace.
    let pid = t.bobs_pid();
    t.refused(&format!("cat /proc/{pid}/root{bobs}")).await;
    t.refused(&format!("ls /proc/{pid}/cwd/")).await;
    // And on the host, as alice's uid, bob's sandbox is closed (0700, his).
    let out = slotgate_tests::as_uid(t.alice, "cat")
        .arg(&bobs)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "alice's uid reads bob's file on the host"
    );
    let meta = std::fs::metadata(t.data("users/bob")).unwrap();
    assert_eq!(meta.uid(), t.bob);
    assert_eq!(meta.mode() & 0o777, 0o700);
}

#[tokio::test]
async fn slotgates_secrets_are_absent_from_the_slot() {
    let mut t = tenants("shell").await;
    // A key stored the way an operator does, so the secret file exists.
    let key = t.env.path("key.txt");
    std::fs::write(&key, "sk-ant-api03-tenant-test-key-0123456789").unwrap();
    let out = t.env.slotctl(&[
        "keys",
        "set",
        "--shared",
        "--from-file",
        key.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::create_dir_all(t.env.path("data/recordings")).unwrap();
    for f in [
        t.data("identity.db"),
        t.data("state.db"),
        t.data("activity.db"),
        t.data("claude-keys.secret"),
        t.data("tls"),
        t.data("recordings"),
        t.data("logs/slots/bob.log"),
        t.env.config.display().to_string(),
    ] {
        t.refused(&format!("ls -A {f} && cat {f} | head -c 16 | od -c"))
            .await;
    }
    // The host's homes are not there either.
    let r = t.run("ls -A /root /home 2>&1; ls / | tr '\\n' ,").await;
    assert!(
        !r.out.contains(".bashrc") && !r.out.contains(".cargo"),
        "{}",
        r.out
    );
    assert!(!r.out.contains("srv,"), "{}", r.out);
    // And on the host, files of the data directory are closed to others
    // (the directory is passable so slots reach their sandboxes).
    for f in ["identity.db", "state.db", "claude-keys.secret"] {
        let mode = std::fs::metadata(t.env.path(&format!("data/{f}")))
            .unwrap()
            .mode();
        assert_eq!(mode & 0o007, 0, "{f} is open to others: {mode:o}");
    }
}

#[tokio::test]
async fn control_and_ttyd_sockets_cannot_be_reached() {
    let mut t = tenants("shell").await;
    let connect = |p: &str| {
        format!("python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])' {p}")
    };
    t.refused(&connect(&t.run_dir("slotctl.sock"))).await;
    t.refused(&connect(&t.run_dir("slots/bob/ttyd.sock"))).await;
    // Her own ttyd's socket is not in her session either.
    t.refused(&connect(&t.run_dir("slots/alice/ttyd.sock")))
        .await;
    // An abstract socket on the host: another network namespace.
    let name = format!("slotgate-tenant-test-{}", std::process::id());
    let _abstract = abstract_listener(&name);
    t.refused(&format!(
        "python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(\"\\0\"+sys.argv[1])' {name}"
    ))
    .await;
    // On the host, as alice's uid: bob's socket directory is closed.
    let out = slotgate_tests::as_uid(t.alice, "ls")
        .arg(t.run_dir("slots/bob"))
        .output()
        .unwrap();
    assert!(!out.status.success());
}

fn abstract_listener(name: &str) -> std::os::unix::net::UnixListener {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    std::os::unix::net::UnixListener::bind_addr(&addr).unwrap()
}

#[tokio::test]
async fn no_privilege_can_be_gained() {
    let mut t = tenants("shell").await;
    t.refused("mount -t tmpfs none /tmp").await;
    t.refused("mount -o remount,rw /usr").await;
    t.refused("mount -o remount,bind,rw /").await;
    t.refused("mknod /tmp/mem c 1 1").await;
    t.refused("unshare -U true").await;
    t.refused("unshare -r true").await;
    t.refused("unshare -n true").await;
    // setuid binaries do nothing under no_new_privs.
    let r = t
        .run("su -c 'id -u' root </dev/null; /usr/bin/mount --bind / /mnt")
        .await;
    assert_ne!(r.rc, 0, "{}", r.out);
    let r = t.run("id -u").await;
    assert_eq!(r.out.trim(), t.alice.to_string());
    // The user knows who they are (a passwd entry of the slot's own).
    let r = t.run("whoami; echo ~").await;
    assert!(r.out.contains("alice"), "{}", r.out);
    assert!(r.out.contains("users/alice/home"), "{}", r.out);
    // Nothing on the host changed.
    assert!(!Path::new("/tmp/mem").exists());
}

#[tokio::test]
async fn other_slots_processes_cannot_be_signalled_or_traced() {
    let mut t = tenants("shell").await;
    let pid = t.bobs_pid();
    t.refused(&format!("kill -0 {pid}")).await;
    t.refused(&format!("kill -9 {pid}")).await;
    t.refused(&format!(
        "python3 -c 'import ctypes,sys; l=ctypes.CDLL(None,use_errno=True); sys.exit(0 if l.ptrace(16,int(sys.argv[1]),0,0)==0 else 1)' {pid}"
    ))
    .await;
    // Bob's tmux server is still there.
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    // Only its own processes are visible at all.
    let r = t.run("ls /proc | grep -c '^[0-9]'").await;
    let n: u32 = r.out.trim().parse().unwrap();
    assert!(n < 20, "{n} processes visible: {}", r.out);
}

#[tokio::test]
async fn an_egress_slot_cannot_reach_the_hosts_loopback() {
    let mut t = tenants("shell").await;
    let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let v6 = std::net::TcpListener::bind("[::1]:0").ok();
    let gw_port = t.gw.addr.port();
    for (host, port) in [
        ("127.0.0.1", gw_port),
        ("127.0.0.1", v4.local_addr().unwrap().port()),
    ] {
        t.refused(&format!(
            "timeout 5 bash -c 'echo > /dev/tcp/{host}/{port}'"
        ))
        .await;
    }
    if let Some(v6) = &v6 {
        let port = v6.local_addr().unwrap().port();
        t.refused(&format!("timeout 5 bash -c 'echo > /dev/tcp/::1/{port}'"))
            .await;
    }
    // The gateway's metrics, trusted from loopback, are not reachable.
    t.refused(&format!(
        "curl -sS -m 5 -k https://127.0.0.1:{gw_port}/metrics"
    ))
    .await;
}

#[tokio::test]
async fn the_caps_hold_from_inside() {
    let mut t = tenants("capped").await;
    // Memory: the process that asks for more than the cap is killed; the
    // slot's shell goes on.
    let r = t
        .run("python3 -c 'a = bytearray(400 << 20); print(len(a))'")
        .await;
    assert_ne!(r.rc, 0, "allocated past the memory cap: {}", r.out);
    assert!(!r.out.contains("419430400"), "{}", r.out);
    // Pids: forking past the cap is refused (one python forks until it
    // cannot, reports, and ends its children).
    std::fs::write(
        t.env.path("data/users/alice/workdir/forks.py"),
        "import os, signal, time\nkids = []\nfor i in range(80):\n    try:\n        pid = os.fork()\n    except OSError:\n        break\n    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n    kids.append(pid)\nprint('forked', len(kids))\nfor k in kids:\n    os.kill(k, signal.SIGKILL)\n    os.waitpid(k, 0)\n",
    )
    .unwrap();
    let r = t.run("python3 forks.py").await;
    let started: u32 = r
        .out
        .split("forked ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{}", r.out));
    assert!(started < 48, "{started} processes forked past pids = 48");
    assert!(started > 10, "could fork only {started}: {}", r.out);
    // Still alive afterwards.
    let r = t.run("echo alive-$((40+2))").await;
    assert!(r.out.contains("alive-42"));
    let info = t
        .env
        .client()
        .get(&slotapi::SlotId::new("alice").unwrap())
        .await
        .unwrap();
    assert_eq!(info.status, slotapi::SlotStatus::Online);
}

#[tokio::test]
async fn the_owner_can_still_do_their_work() {
    let mut t = tenants("shell").await;
    let r = t
        .run("cd ~/../workdir && printf '#!/bin/sh\\necho ran-$((6*7))\\n' > w.sh && chmod +x w.sh && ./w.sh")
        .await;
    assert_eq!(r.rc, 0, "{}", r.out);
    assert!(r.out.contains("ran-42"), "{}", r.out);
    let file = t.env.path("data/users/alice/workdir/w.sh");
    assert_eq!(std::fs::metadata(&file).unwrap().uid(), t.alice);
    // /tmp is the slot's own and writable.
    let r = t.run("echo x > /tmp/mine && cat /tmp/mine").await;
    assert_eq!(r.rc, 0, "{}", r.out);
}

/// "The internet": a web server in a network namespace the test makes,
/// reached through a veth pair from the host, so from an `egress` slot
/// only through pasta.
struct Internet {
    ns: String,
    server: std::process::Child,
    addr: String,
}

impl Internet {
    fn start() -> Internet {
        let tag = std::process::id() % 200 + 20;
        let ns = format!("sgnet{}", std::process::id());
        let host_if = format!("sgh{tag}");
        let ns_if = format!("sgn{tag}");
        let sh = |args: &str| {
            let out = Command::new("sh").arg("-c").arg(args).output().unwrap();
            assert!(
                out.status.success(),
                "{args}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        sh(&format!("ip netns add {ns}"));
        sh(&format!(
            "ip link add {host_if} type veth peer name {ns_if}"
        ));
        sh(&format!("ip link set {ns_if} netns {ns}"));
        sh(&format!(
            "ip addr add 10.231.{tag}.1/24 dev {host_if} && ip link set {host_if} up"
        ));
        sh(&format!(
            "ip netns exec {ns} sh -c 'ip addr add 10.231.{tag}.2/24 dev {ns_if} && ip link set {ns_if} up && ip link set lo up'"
        ));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "hello from the internet\n").unwrap();
        let server = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "python3",
                "-m",
                "http.server",
                "8080",
                "--bind",
            ])
            .arg(format!("10.231.{tag}.2"))
            .arg("--directory")
            .arg(dir.keep())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Internet {
            ns,
            server,
            addr: format!("10.231.{tag}.2:8080"),
        }
    }
}

impl Drop for Internet {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

#[tokio::test]
async fn an_egress_slot_reaches_the_internet_stand_in() {
    let net = Internet::start();
    // The server is up when the host reaches it.
    slotgate_tests::wait_for("the stand-in web server", T, || {
        let ok = std::net::TcpStream::connect(&net.addr).is_ok();
        async move { ok }
    })
    .await;
    let mut t = tenants("shell").await;
    let r = t.run(&format!("curl -sS -m 10 http://{}/", net.addr)).await;
    assert_eq!(r.rc, 0, "{}", r.out);
    assert!(r.out.contains("hello from the internet"), "{}", r.out);
}

/// A slot that can write its own socket directory (a template without
/// bubblewrap, or a host account in `users = "system"`) replaces its
/// ttyd socket with a link to another slot's: the gateway must not hand
/// alice bob's terminal. (Done here as root on alice's behalf.)
#[tokio::test]
async fn a_socket_linked_to_another_slot_is_refused() {
    let mut t = tenants("shell").await;
    let r = t.run("id -u").await;
    assert_eq!(r.out.trim(), t.alice.to_string());
    let mine = t.env.path("run/slots/alice/ttyd.sock");
    std::fs::remove_file(&mine).unwrap();
    std::os::unix::fs::symlink(t.env.path("run/slots/bob/ttyd.sock"), &mine).unwrap();
    let cookie = user_session_cookie(&t).await;
    match accounts::tty(&t.gw, "alice", &[("Cookie", &cookie)]).await {
        Err(_) => {}
        Ok(mut other) => {
            other.input("id -u\r").await.unwrap();
            other.drain_for(Duration::from_secs(2)).await;
            assert!(
                !other.screen.contains(&t.bob.to_string()),
                "alice got bob's terminal: {:?}",
                other.screen
            );
        }
    }
    // A plain request (ttyd's page) is refused the same way.
    let (c, _) = accounts::browser();
    let r = c
        .get(format!("{}/slot/alice/", t.gw.base_url()))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert!(r.status().as_u16() >= 500, "{}", r.status());
}

async fn user_session_cookie(t: &Tenants) -> String {
    let (c, jar) = accounts::browser();
    let r = accounts::login(&t.gw, &c, "alice", &accounts::password_of("alice"), "/").await;
    assert_eq!(r.status(), 303);
    accounts::session_cookie(&t.gw, &jar).unwrap()
}

/// With a template whose slots share the host's network, a slot could
/// connect from 127.0.0.1: slotgate then bases no trust on a loopback
/// source (here: /metrics), says which template is the reason, and trusts
/// it again only when told to.
#[tokio::test]
async fn a_host_network_template_makes_loopback_untrusted() {
    let hostnet = "command = [\"bash\"]\n[sandbox]\nbwrap = true\nnetwork = \"host\"\n";
    let mut env = TestEnv::new(&[("hostnet", hostnet)], "");
    env.start_daemon().await;
    let gw = Slotgate::start(&env.config, Options::default())
        .await
        .unwrap();
    let r = gw.get("/metrics").await.unwrap();
    assert_ne!(r.status, 200, "metrics served to loopback: {}", r.text());
    let log = gw.stderr();
    assert!(log.contains("hostnet"), "{log}");
    assert!(log.contains("trust_loopback"), "{log}");
    drop(gw);

    let mut env2 = TestEnv::new(&[("hostnet", hostnet)], "");
    env2.start_daemon().await;
    let gw = Slotgate::start(
        &env2.config,
        Options {
            extra: "trust_loopback = true\n".into(),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let r = gw.get("/metrics").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    drop(env);
}

/// The unprivileged layout (one person's workstation): the daemon runs as
/// an ordinary uid, slots share it, so the cases about other users' files
/// and processes do not apply (`doctor` says so). What still holds, and is
/// checked here: each slot's sandbox, tmux windows included, has no
/// capabilities, no_new_privs, none of slotgate's files, and no way to the
/// host's loopback.
#[tokio::test]
async fn the_unprivileged_layout_still_confines_each_slot() {
    const NOBODY: u32 = 65534;
    let env = TestEnv::unprivileged(&[], "", NOBODY);
    let out = env.slotctl(&["doctor"]);
    let doctor = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(doctor.contains("not isolated from each other"), "{doctor}");
    let mut t = tenants_in(env, "shell").await;
    assert_eq!(t.alice, NOBODY);
    assert_eq!(t.bob, NOBODY, "slots share the daemon's uid here");
    let probe = confinement_probe(&t.data(""));
    let r = t.run(&probe).await;
    assert_confined(&r.out, NOBODY);
    t.tty.input("\x02c").await.unwrap();
    t.tty.drain_for(Duration::from_millis(300)).await;
    let r = t.run(&probe).await;
    assert_confined(&r.out, NOBODY);
    let port = t.gw.addr.port();
    t.refused(&format!(
        "timeout 5 bash -c 'echo > /dev/tcp/127.0.0.1/{port}'"
    ))
    .await;
    t.refused(&format!("cat {}", t.data("identity.db"))).await;
    t.refused("unshare -U true").await;
}

/// Killing the tmux server from inside (the user's own session) ends the
/// session, not the slot: the supervisor notices, starts a new session and
/// the next terminal works.
#[tokio::test]
async fn a_session_killed_from_inside_comes_back() {
    let mut t = tenants("shell").await;
    t.tty.input("tmux kill-server\r").await.unwrap();
    assert!(t.tty.closed_within(T).await, "the terminal stayed open");
    let id = slotapi::SlotId::new("alice").unwrap();
    let log = t.env.slot_log("alice");
    slotgate_tests::wait_for("the supervisor to notice", T, || {
        let seen = std::fs::read_to_string(&log)
            .is_ok_and(|l| l.contains("the session (tmux server) ended"));
        async move { seen }
    })
    .await;
    t.env
        .wait_status("alice", slotapi::SlotStatus::Online, T)
        .await;
    let cookie = user_session_cookie(&t).await;
    let mut again = accounts::tty(&t.gw, "alice", &[("Cookie", &cookie)])
        .await
        .unwrap();
    again.input("echo back-$((40+2))\r").await.unwrap();
    again.expect("back-42", T).await.unwrap();
    assert!(t.env.client().get(&id).await.unwrap().restarts >= 1);
}
