//! The interactive shell (`framefusion sql` with no SQL), driven through a
//! pseudo-terminal as a person types: a statement over two lines, Tab completing a table
//! name, Ctrl-C cancelling a long `frames` scan while the shell stays, `\d NAME`, and the
//! history of one session recalled with the arrow key in the next.

use framefusion_tests::{corpus_dir, framefusion_bin};

/// Runs `framefusion sql --no-catalog` in a pseudo-terminal (200x50) with
/// `FRAMEFUSION_HOME=home`, sends each step's keys and waits for its expected text in
/// what the terminal shows after them (a step without one waits its timeout); panics with
/// the transcript when one does not come, or when the shell does not exit with 0.
fn session(home: &std::path::Path, steps: &serde_json::Value) -> String {
    let driver = r#"
import fcntl, json, os, pty, select, struct, sys, termios, time
argv, steps = json.loads(sys.argv[1]), json.loads(sys.argv[2])
pid, fd = pty.fork()
if pid == 0:
    os.environ["TERM"] = "xterm"
    os.execv(argv[0], argv)
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
out = b""
def read_until(text, timeout, mark):
    global out
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text is not None and text.encode() in out[mark:]:
            return True
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return text is None
            if not chunk:
                return text is None
            out += chunk
    return text is None
for step in steps:
    mark = len(out)
    for keys in step.get("keys", []):
        os.write(fd, keys.encode())
        time.sleep(step.get("pause", 0.3))
    if not read_until(step.get("expect"), step.get("timeout", 60), mark):
        sys.stdout.write(out.decode(errors="replace"))
        sys.exit("expected " + repr(step.get("expect")) + " after " + repr(step.get("keys")))
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
sys.exit(0 if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else "shell exit status " + str(status))
"#;
    let bin = framefusion_bin();
    let argv = serde_json::json!([bin, "sql", "--no-catalog"]).to_string();
    let steps = steps.to_string();
    // the driver's child inherits FRAMEFUSION_HOME from the driver
    let out = std::process::Command::new(framefusion_tests::python())
        .args(["-c", driver, &argv, &steps])
        .env("FRAMEFUSION_HOME", home)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the terminal driver: {e}"));
    let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}\n--- terminal ---\n{transcript}",
        String::from_utf8_lossy(&out.stderr)
    );
    transcript
}

#[test]
fn shell_edits_completes_cancels_and_remembers() {
    let home = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // the models and libraries stay where setup put them; only the history moves
    for entry in ["lib", "models", "corpus"] {
        let from = framefusion_engine::framefusion_home().join(entry);
        if from.exists() {
            std::os::unix::fs::symlink(&from, home.path().join(entry))
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    let corpus = corpus_dir();
    let long = framefusion_engine::framefusion_home().join("bench/bbb.mp4");
    assert!(
        long.is_file(),
        "{} is missing: run make setup",
        long.display()
    );
    let steps = serde_json::json!([
        {"expect": "SQL shell"},
        {"keys": [format!("CREATE EXTERNAL TABLE corpus_videos STORED AS VIDEO LOCATION '{}';\r", corpus.display())],
         "timeout": 2},
        // one statement over two lines
        {"keys": ["SELECT count(*) * 7 AS sevens\r", "FROM corpus_videos;\r"], "expect": "| 42 "},
        // Tab completes the table's name
        {"keys": ["SELECT count(*) + 1000 AS plus FROM corpus_v", "\t", ";\r"], "expect": "| 1006 "},
        // Ctrl-C cancels a long scan (every frame of a 10-minute video); the shell stays
        {"keys": [format!("SELECT count(*) AS n FROM frames('{}') WHERE rgb IS NOT NULL AND width > 0;\r", long.display())], "pause": 3.0, "timeout": 0},
        {"keys": ["\u{3}"], "expect": "cancelled", "timeout": 15},
        {"keys": ["SELECT 6 * 111 AS answer;\r"], "expect": "| 666 "},
        // \d NAME describes a table
        {"keys": ["\\d corpus_videos\r"], "expect": "probe_error"},
        {"keys": ["\\q\r"]},
    ]);
    let first = session(home.path(), &steps);
    assert!(
        !first.contains("| n "),
        "the frames scan finished:\n{first}"
    );
    let history = std::fs::read_to_string(home.path().join("history.txt"))
        .unwrap_or_else(|e| panic!("no history: {e}"));
    assert!(history.contains("SELECT 6 * 111 AS answer;"), "{history}");
    // a second session recalls the first one's statements (up three times: past `\q`
    // and `\d corpus_videos`)
    let steps = serde_json::json!([
        {"expect": "SQL shell"},
        {"keys": ["\u{1b}[A", "\u{1b}[A", "\u{1b}[A", "\r"], "expect": "| 666 "},
        {"keys": ["\u{4}"]},
    ]);
    session(home.path(), &steps);
}
