//! The fake's transfers, network, system files and store: recorded, with a local
//! rsync copying for real and the system files written into the test's temp dir.

use super::*;

/// `host:path` names a remote side; a local path has no colon before its first slash.
fn is_remote(arg: &str) -> bool {
    arg.split_once(':')
        .is_some_and(|(host, _)| !host.is_empty() && !host.contains('/'))
}

impl Transfer for FakeHost {
    /// Local to local: copies the tree (`--delete` first empties the destination) and
    /// reports the bytes sent as rsync's `--stats` do; a dry run reports no difference.
    /// With a remote side nothing is copied.
    fn rsync(&self, args: &[OsString]) -> io::Result<Output> {
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let operands: Vec<&String> = match args.iter().position(|a| a == "--") {
            Some(i) => args[i + 1..].iter().collect(),
            None => Vec::new(),
        };
        let (src, dest) = match operands.as_slice() {
            [s, d] => ((*s).clone(), (*d).clone()),
            _ => return Ok(output(1, "", "rsync: the fake wants `-- SRC DEST`")),
        };
        let dry_run = args.iter().any(|a| a == "--dry-run");
        let fail = self.record(Call::Rsync {
            src: src.clone(),
            dest: dest.clone(),
            dry_run,
            args: args.clone(),
        });
        if dry_run || is_remote(&src) || is_remote(&dest) {
            return Ok(if fail {
                output(RSYNC_FAILURE, "", "rsync error: injected failure")
            } else {
                output(0, "", "")
            });
        }
        let (from, to) = (Path::new(&src), Path::new(&dest));
        if args.iter().any(|a| a == "--delete") && to.is_dir() {
            std::fs::remove_dir_all(to)?;
        }
        if from.is_dir() {
            copy_tree(from, to, &HashSet::new(), fail)?;
        } else {
            std::fs::copy(from, to)?;
        }
        if fail {
            return Ok(output(
                RSYNC_FAILURE,
                "",
                "rsync error: some files/attrs were not transferred (injected)",
            ));
        }
        Ok(output(0, "Total bytes sent: 1,234\n", ""))
    }

    /// Records the command; answers as a reachable host with nothing on it would
    /// (exit 0, no output).
    fn ssh(&self, args: &[OsString], input: Option<&[u8]>) -> io::Result<Output> {
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let after = args.iter().position(|a| a == "--").map_or(0, |i| i + 1);
        let fail = self.record(Call::Ssh {
            host: args.get(after).cloned().unwrap_or_default(),
            command: args.last().cloned().unwrap_or_default(),
            input: input.map(<[u8]>::to_vec),
        });
        Ok(if fail {
            output(SSH_FAILURE, "", "ssh: connect to host: injected failure")
        } else {
            output(0, "", "")
        })
    }

    /// Records the pipe; nothing is sent (no stream, 0 bytes).
    fn pipe(&self, sender: &[OsString], receiver: &[OsString]) -> Result<u64, String> {
        if self.record(Call::Pipe {
            sender: words(sender),
            receiver: words(receiver),
        }) {
            return Err("receive failed (injected failure)".into());
        }
        Ok(0)
    }

    /// Records the command; answers with exit 0 and no output.
    fn run_local(&self, argv: &[OsString]) -> io::Result<Output> {
        if self.record(Call::RunLocal { argv: words(argv) }) {
            return Err(injected_io("running a local command"));
        }
        Ok(output(0, "", ""))
    }
}

fn words(args: &[OsString]) -> Vec<String> {
    args.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

fn injected_io(what: &str) -> io::Error {
    io::Error::other(format!("injected failure: {what}"))
}

/// Records; applies nothing (there is no network to change).
impl Networking for FakeHost {
    fn bridge_exists(&self, _bridge: &str) -> bool {
        true
    }
    fn ensure_bridge<'a>(
        &'a self,
        bridge: &'a str,
        subnet: &'a Subnet,
    ) -> NetFuture<'a, BridgeReport> {
        let fail = self.record(Call::EnsureBridge {
            bridge: bridge.into(),
            gateway: subnet.gateway,
            prefix: subnet.prefix,
        });
        Box::pin(async move {
            if fail {
                return Err(format!("injected failure: creating bridge {bridge}"));
            }
            Ok(BridgeReport::default())
        })
    }
    fn enable_forwarding(&self) -> Result<(), String> {
        if self.record(Call::EnableForwarding) {
            return Err("injected failure: enabling forwarding".into());
        }
        Ok(())
    }
    fn apply_nft(&self, ruleset: &str) -> Result<(), String> {
        if self.record(Call::NftApply {
            ruleset: ruleset.into(),
        }) {
            return Err("nft refused the containers' firewall ruleset (injected failure)".into());
        }
        Ok(())
    }
    fn isolate_bridge_ports<'a>(&'a self, bridge: &'a str) -> NetFuture<'a, Vec<String>> {
        let fail = self.record(Call::IsolatePorts {
            bridge: bridge.into(),
        });
        Box::pin(async move {
            if fail {
                return Err(format!("injected failure: isolating the ports of {bridge}"));
            }
            Ok(Vec::new())
        })
    }
    fn start_dnsmasq(
        &self,
        args: Vec<String>,
        paths: DnsmasqPaths,
        rs: Vec<DhcpHost>,
    ) -> Arc<Supervisor> {
        self.record(Call::DnsmasqStart { args: args.clone() });
        Supervisor::detached(args, paths, rs)
    }
}

/// Records, then writes the files for real: the fake engine's config points them into
/// its temp dir.
impl SystemFiles for FakeHost {
    fn write_snapper_config(
        &self,
        snapper: &SnapperConfig,
        name: &str,
        text: &str,
    ) -> io::Result<()> {
        if self.record(Call::WriteSnapperConfig { name: name.into() }) {
            return Err(injected_io("writing the snapper config"));
        }
        crate::host::system_files::write_snapper_config(snapper, name, text)
    }
    fn remove_snapper_config(&self, snapper: &SnapperConfig, name: &str) -> io::Result<bool> {
        if self.record(Call::RemoveSnapperConfig { name: name.into() }) {
            return Err(injected_io("removing the snapper config"));
        }
        crate::host::system_files::remove_snapper_config(snapper, name)
    }
    fn sync_hosts_file(&self, path: &Path, entries: &[(String, Ipv4Addr)]) -> io::Result<bool> {
        if self.record(Call::SyncHostsFile {
            path: path.into(),
            entries: entries.to_vec(),
        }) {
            return Err(injected_io("writing the hosts file"));
        }
        crate::net::hosts_file::sync(path, entries)
    }
    /// Records, then runs the real file work on the fake engine's own files.
    fn ensure_subid_pool(&self, subids: &crate::idmap::SubIds) -> Result<(), String> {
        if self.record(Call::EnsureSubidPool) {
            return Err("injected failure: adding root's subordinate ids".into());
        }
        subids.ensure_pool()
    }
    fn hostname(&self) -> Option<String> {
        Some(FAKE_HOSTNAME.into())
    }
    /// 8 GiB, half of it available.
    fn memory(&self) -> (u64, u64) {
        (8 << 30, 4 << 30)
    }
}

/// The store is the directory the config names, as it is.
impl StoreMount for FakeHost {
    fn open_store(&self, cfg: &HostConfig) -> Result<Store, StoreError> {
        if self.record(Call::OpenStore {
            root: cfg.store_root.clone(),
        }) {
            return Err(StoreError::Io {
                action: "mount",
                path: cfg.store_root.clone(),
                source: injected_io("mounting the store"),
            });
        }
        Ok(Store::at(&cfg.store_root))
    }
}
