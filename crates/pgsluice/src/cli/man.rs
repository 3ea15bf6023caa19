//! The man page, `pgsluice.1`: NAME, SYNOPSIS, DESCRIPTION and OPTIONS come from
//! the clap command ([`super::Cli`]) through `clap_mangen`, so they cannot drift
//! from `--help`; the sections after them (files, signals, systemd, see also) are
//! written here in roff. `pgsluice --print-man` prints it; `scripts/package` puts
//! it in the Debian package.
//!
//! `--print-man` is not a clap flag: the required configuration-source group would
//! list it in every usage line. `main` checks for it, alone, before clap parses.

use std::ffi::OsString;

use clap::CommandFactory;

use super::Cli;

/// Hand-written sections appended to the generated page.
const EXTRA: &str = r#".SH CONFIGURATION
The configuration file is pgsluice's TOML or PgBouncer's pgbouncer.ini (chosen by the
file extension, else by the content). Every [general] key can be overridden with a
\fBPGSLUICE_\fR\fIKEY\fR environment variable; command-line flags win over both.
.SH SIGNALS
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Graceful shutdown: stop accepting clients, let transactions in flight finish (up to
shutdown_timeout). A second signal stops at once.
.TP
\fBSIGQUIT\fR
Stop at once.
.TP
\fBSIGHUP\fR
Reload the configuration file and reopen the log file (as the admin console's RELOAD).
.TP
\fBSIGUSR1\fR, \fBSIGUSR2\fR
Pause every pool (PAUSE), resume (RESUME).
.SH SYSTEMD
When \fBNOTIFY_SOCKET\fR is set (a unit with \fIType=notify\fR), pgsluice tells systemd
READY=1 once it listens, RELOADING=1 and READY=1 around a SIGHUP reload, and STOPPING=1
when it shuts down.
.SH FILES
.TP
\fI/etc/pgsluice/pgsluice.toml\fR
The configuration file of the Debian package's pgsluice.service.
.TP
\fI/lib/systemd/system/pgsluice.service\fR
The systemd unit (runs as the system user pgsluice).
.SH EXIT STATUS
0 on success, 1 when the configuration or the start-up fails, 2 for a usage error.
.SH SEE ALSO
\fBpgbouncer\fR(1), \fBpostgres\fR(1), \fBsystemd.service\fR(5).
The documentation: docs/configuration.md and docs/packaging.md in the source tree.
"#;

/// The flag that prints the man page; only honoured as the sole argument.
pub const FLAG: &str = "--print-man";

/// True when the command line (program name first) is exactly `pgsluice --print-man`.
pub fn requested(args: impl IntoIterator<Item = OsString>) -> bool {
    let rest: Vec<OsString> = args.into_iter().skip(1).collect();
    rest.len() == 1 && rest[0] == FLAG
}

/// The man page as roff text.
pub fn render() -> std::io::Result<Vec<u8>> {
    let cmd = Cli::command();
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .section("1")
        .manual("pgsluice manual")
        .render(&mut out)?;
    out.extend_from_slice(EXTRA.as_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_lone_flag_asks_for_the_page() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(requested(args(&["pgsluice", "--print-man"])));
        assert!(!requested(args(&["pgsluice"])));
        assert!(!requested(args(&["pgsluice", "x.toml", "--print-man"])));
        assert!(!requested(args(&["pgsluice", "--print-manual"])));
    }

    #[test]
    fn man_page_has_the_flags_and_the_hand_written_sections() {
        let page = String::from_utf8(render().unwrap()).unwrap();
        assert!(page.contains(".TH pgsluice 1"), "{page}");
        for needle in [
            "connection pooler",
            "check\\-config",
            "pool\\-size",
            ".SH SIGNALS",
            ".SH FILES",
            "/etc/pgsluice/pgsluice.toml",
        ] {
            assert!(page.contains(needle), "no {needle}");
        }
    }
}
