//! The open-file limit. Every client connection, pending or authenticated, and every server
//! connection is a file descriptor; the usual soft limit (1024) would stop the proxy at about
//! a thousand clients whatever its configuration says, so it is raised to the hard limit at
//! start, and the proxy warns when even that cannot hold what the configuration allows.

use pgrepl_config::Config;

/// Descriptors besides connections: the listeners, the runtimes' epoll and wake-up
/// descriptors, the log, and the health monitor's and catalog look-ups' connections.
const OVERHEAD: libc::rlim_t = 64;
const PER_BACKEND_OVERHEAD: libc::rlim_t = 4;

/// Descriptors the configuration may have open at once: every pending login and client,
/// every backend's connections.
pub fn wanted(config: &Config) -> libc::rlim_t {
    let backends = 1 + config.replicas.len() as libc::rlim_t;
    let per_backend = config.pool.max_server_connections as libc::rlim_t + PER_BACKEND_OVERHEAD;
    config.proxy.max_client_connections as libc::rlim_t
        + config.proxy.max_pending_logins as libc::rlim_t
        + backends * per_backend
        + OVERHEAD
}

/// Raises the soft limit to the hard one if it is lower, and logs what the limit is; warns
/// when it is below what the configuration may need.
pub fn raise_and_report(config: &Config) {
    let wanted = wanted(config);
    match raise() {
        Ok(Limits { soft, was }) => {
            if soft == was {
                tracing::info!(open_files = soft, "open file limit");
            } else {
                tracing::info!(
                    open_files = soft,
                    raised_from = was,
                    "open file limit raised"
                );
            }
            if soft < wanted {
                tracing::warn!(
                    open_files = soft,
                    wanted,
                    "the open file limit is below what [proxy] max_client_connections, \
                     max_pending_logins and [pool] max_server_connections allow: past it, \
                     new connections fail to be accepted; raise the hard limit (ulimit -Hn, \
                     LimitNOFILE=, docker --ulimit nofile=)"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, wanted, "cannot read or raise the open file limit"),
    }
}

struct Limits {
    /// The soft limit now, and before.
    soft: libc::rlim_t,
    was: libc::rlim_t,
}

fn raise() -> std::io::Result<Limits> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit, which `limit` is.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let was = limit.rlim_cur;
    if limit.rlim_cur >= limit.rlim_max {
        return Ok(Limits { soft: was, was });
    }
    let raised = libc::rlimit {
        rlim_cur: limit.rlim_max,
        ..limit
    };
    // SAFETY: setrlimit reads one rlimit, which `raised` is.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        // A hard limit of "unlimited" is refused for open files (fs.nr_open caps it).
        return Ok(Limits { soft: was, was });
    }
    Ok(Limits {
        soft: raised.rlim_cur,
        was,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wanted_counts_clients_logins_and_every_backend_s_connections() {
        let mut config = Config::defaults();
        // 1000 clients + 10,000 logins + 2 backends × (90 + 4) + 64.
        assert_eq!(wanted(&config), 1000 + 10_000 + 2 * 94 + 64);
        config.replicas.clear();
        config.proxy.max_pending_logins = 1;
        assert_eq!(wanted(&config), 1000 + 1 + 94 + 64);
    }

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let Limits { soft, was } = raise().unwrap();
        assert!(soft >= was);
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as in `raise`.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!(limit.rlim_cur, soft);
        if limit.rlim_max != libc::RLIM_INFINITY {
            assert_eq!(limit.rlim_cur, limit.rlim_max);
        }
    }
}
