//! The `gyrofs` command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use indicatif::HumanBytes;

use gyrofs::dtype::Dtype;
use gyrofs::error::Error;

/// A `--dtype` list (one clap value).
#[derive(Debug, Clone)]
struct DtypeList(Vec<Dtype>);

fn parse_dtype_list(s: &str) -> Result<DtypeList, String> {
    parse_dtypes(s).map(DtypeList)
}
use gyrofs::mount::{MountOptions, default_threads};
use gyrofs::remote::RemoteOptions;
use gyrofs::volume::{Options, Volume, parse_dtypes};

/// Mount ML checkpoints as lazy, byte-exact virtual safetensors files.
///
/// SOURCE is a .safetensors, .gguf or PyTorch file, or a folder: a Hugging
/// Face model folder (single or sharded safetensors with
/// model.safetensors.index.json, also a cache snapshot of symlinks), a
/// gpt-oss original/ folder (with dtypes.json), or a GGUF split set
/// (name-00001-of-0000N.gguf). SOURCE may also be remote:
/// s3://BUCKET/PREFIX (a folder or one object), hf://ORG/MODEL[@REVISION]
/// (a Hub repository) or https://HOST/PATH/FILE; only the bytes that are
/// read are fetched, into a local block cache. Nothing is converted until a
/// byte is read. Docs: docs/VIEWS.md, docs/FORMAT.md, docs/REMOTE.md.
#[derive(Parser)]
#[command(name = "gyrofs", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// How remote sources (s3://, hf://, https://) are fetched and cached, and
/// where caches (the block cache, --cache-converted) live.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Caches and remote sources")]
struct RemoteArgs {
    /// Block cache of remote sources, and of converted bytes with
    /// --cache-converted [default: $XDG_CACHE_HOME/gyrofs or
    /// ~/.cache/gyrofs].
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Largest size of the block cache (K, M, G, T suffixes, powers of 1024);
    /// least recently used blocks are evicted past it [default: 64G, or 90%
    /// of what the cache directory's disk can hold if less; a larger size
    /// given here is warned about]. The converted-bytes cache
    /// (--cache-converted) has a cap of this size of its own.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    cache_size: Option<u64>,
    /// S3-compatible endpoint (MinIO, R2, Ceph, ...) [default: AWS, or
    /// $AWS_ENDPOINT_URL]. Credentials: the usual AWS_* variables or the
    /// instance's role.
    #[arg(long, value_name = "URL")]
    endpoint_url: Option<String>,
    /// Send S3 requests unsigned (public buckets).
    #[arg(long)]
    no_sign_request: bool,
    /// Seconds without a byte from the server before a request is given up
    /// (and retried).
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    timeout: f64,
    /// Retries of a failed request (with backoff) before the read fails
    /// with EIO.
    #[arg(long, value_name = "N", default_value_t = 3)]
    retries: u32,
}

impl RemoteArgs {
    fn options(&self) -> RemoteOptions {
        RemoteOptions {
            cache_dir: self.cache_dir.clone(),
            cache_size: self.cache_size,
            endpoint_url: self.endpoint_url.clone(),
            no_sign_request: self.no_sign_request,
            limits: gyrofs::remote::Limits {
                stall: std::time::Duration::from_secs_f64(self.timeout.max(0.001)),
                retries: self.retries,
            },
        }
    }
}

/// `64G`, `500M`, `1048576`.
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, shift) = match s.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&s[..s.len() - 1], 10),
        Some('M') => (&s[..s.len() - 1], 20),
        Some('G') => (&s[..s.len() - 1], 30),
        Some('T') => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a size (e.g. 64G, 500M)"))?;
    if n.is_nan() || n < 0.0 {
        return Err(format!("'{s}' is not a size"));
    }
    Ok((n * (1u64 << shift) as f64) as u64)
}

#[derive(Subcommand)]
enum Cmd {
    /// Mount SOURCE read-only at MOUNTPOINT.
    ///
    /// Returns once the mount answers (so the next line of a script can read
    /// from it); the filesystem keeps running in the background until
    /// `umount MOUNTPOINT` (or `gyrofs umount MOUNTPOINT`). Root mounts
    /// directly; other users need fusermount3 (Debian package fuse3).
    ///
    /// The tree: manifest.json (every tensor and the config); raw/ (lossless:
    /// model.safetensors with the config and tokenizer files beside it,
    /// tensors/NAME.safetensors); bf16/ (dequantized to BF16 as a Hugging Face
    /// model folder: sharded model, index, config.json, tensors/); and for
    /// mixture-of-experts models raw/experts/ and bf16/experts/ (one file per
    /// layer and expert, base.safetensors, registry.json).
    ///
    /// Symlinks in a source folder are followed only inside it (and, for a
    /// Hugging Face cache snapshot, into the cache's blobs/). A file the
    /// model does not need that cannot be served (a link out, a broken
    /// link) is left out with a warning; one it needs (weights, index,
    /// config, tokenizer) refuses the mount.
    Mount {
        /// The checkpoint: a file or a folder, or a URL (s3://BUCKET/PREFIX,
        /// hf://ORG/MODEL[@REVISION][/PATH], https://HOST/PATH/FILE).
        source: PathBuf,
        /// An existing directory to mount on.
        mountpoint: PathBuf,
        /// Stay in the foreground (Ctrl-C unmounts).
        #[arg(short, long)]
        foreground: bool,
        /// FUSE worker threads [default: number of CPUs, 4 to 16; 32 for a
        /// remote source].
        #[arg(long)]
        threads: Option<usize>,
        /// Let other users read the mount (non-root users need
        /// user_allow_other in /etc/fuse.conf). Each file and folder still
        /// has the owner, group and read permission of the source files it
        /// is made from (the most restrictive of them, write bits removed;
        /// a remote source belongs to the mounting user), and the kernel
        /// enforces them: a user sees through the mount only what they
        /// could read directly. --uid, --gid, --file-mode and --dir-mode
        /// override that.
        #[arg(long)]
        allow_other: bool,
        /// Owner (numeric user id) of every file and folder, instead of
        /// the source's.
        #[arg(long, value_name = "UID")]
        uid: Option<u32>,
        /// Group (numeric group id) of every file and folder, instead of
        /// the source's.
        #[arg(long, value_name = "GID")]
        gid: Option<u32>,
        /// Permission bits of every file, in octal (e.g. 0440), instead of
        /// the source's; write bits are ignored (the mount is read-only).
        #[arg(long, value_name = "MODE", value_parser = gyrofs::access::parse_mode)]
        file_mode: Option<u16>,
        /// Permission bits of every folder, in octal (e.g. 0550), instead
        /// of the source's; write bits are ignored.
        #[arg(long, value_name = "MODE", value_parser = gyrofs::access::parse_mode)]
        dir_mode: Option<u16>,
        /// Append the daemon's log to this file (default: discarded in the
        /// background, stderr with -f). Verbosity: RUST_LOG=info|debug.
        #[arg(long, value_name = "FILE")]
        log_file: Option<PathBuf>,
        /// Kernel readahead of the mount in KiB (set when running as root).
        #[arg(long, value_name = "KIB", default_value_t = gyrofs::mount::DEFAULT_READ_AHEAD_KB)]
        read_ahead_kb: u32,
        /// Converted views to present, one directory each: bf16/, f16/,
        /// f32/ (comma-separated). Every floating value is computed exactly
        /// and rounded once to the dtype, as torch's `.to()` does (F16: values
        /// past 65504 become inf).
        #[arg(long, value_name = "LIST", default_value = "bf16", value_parser = parse_dtype_list)]
        dtype: DtypeList,
        /// Keep converted bytes on disk, in --cache-dir (its converted/
        /// folder, bounded by --cache-size): each byte of bf16/, f16/, f32/
        /// and gguf/ is computed once, and stays valid across remounts and
        /// reboots until the source changes. A file whose bytes are all
        /// there is served by the kernel straight from its cache file (FUSE
        /// passthrough, Linux 6.9+, as root). `gyrofs cache ls` shows it,
        /// `gyrofs cache clear` frees it. See docs/CACHE.md.
        #[arg(long)]
        cache_converted: bool,
        /// Options the way mount(8), fstab and sshfs take them: the long
        /// options above with _ for - and + between dtypes
        /// (-o allow_other,dtype=bf16+f16,cache_dir=/var/cache/gyrofs,uid=1000);
        /// mount(8)'s generic ones (ro, rw, _netdev, nofail, defaults,
        /// x-*) are accepted and ignored. See docs/MOUNTING.md.
        // Empty here unless given in a group of short flags (`-fo LIST`,
        // refused): `mount_options::normalize` turns each list into long
        // flags before parsing. Declared for --help, the man page and the
        // completions.
        #[arg(short = 'o', value_name = "OPT[,OPT...]")]
        options: Vec<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Unmount a gyrofs mount (same as `umount MOUNTPOINT`).
    Umount {
        /// Where a gyrofs filesystem is mounted.
        mountpoint: PathBuf,
        /// Detach now, finish when the last open file is closed.
        #[arg(short = 'l', long)]
        lazy: bool,
    },
    /// List the tensors of SOURCE: name, stored dtype, logical dtype, shape, bytes.
    Ls {
        /// The checkpoint: a file or a folder, or a URL (s3://BUCKET/PREFIX,
        /// hf://ORG/MODEL[@REVISION][/PATH], https://HOST/PATH/FILE).
        source: PathBuf,
        /// Print the manifest (every tensor, files, config) as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Write the files of one view of SOURCE to OUTDIR, without FUSE.
    ///
    /// The output is byte-identical to `cp -r MOUNTPOINT/VIEW OUTDIR` (OUTDIR
    /// not existing yet). Existing files of the same names are replaced; each
    /// file is written under a temporary name and renamed when complete.
    Convert {
        /// The checkpoint: a file or a folder, or a URL (s3://BUCKET/PREFIX,
        /// hf://ORG/MODEL[@REVISION][/PATH], https://HOST/PATH/FILE).
        source: PathBuf,
        /// Where to write (created if missing).
        outdir: PathBuf,
        /// A path inside the mount tree: a directory (`bf16`, `raw`,
        /// `raw/tensors`, `bf16/experts`, `.` for everything) or a single file
        /// (`raw/model.safetensors`) [default: the first converted view, bf16].
        #[arg(long)]
        view: Option<String>,
        /// Converted views to present (as for `mount`): bf16, f16, f32.
        #[arg(long, value_name = "LIST", default_value = "bf16", value_parser = parse_dtype_list)]
        dtype: DtypeList,
        /// Write only the files directly in VIEW, not its subdirectories
        /// (`tensors/`, `experts/`, which hold the same tensors again): for
        /// `bf16`, just the loader-ready model folder, as `cp MOUNTPOINT/bf16/*
        /// OUTDIR` copies it.
        #[arg(long)]
        files_only: bool,
        /// Do not print a progress bar or summary.
        #[arg(short, long)]
        quiet: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Show or free the converted-bytes cache (mount --cache-converted).
    ///
    /// Each entry is one virtual file of one version of a source. Entries
    /// of an older version of a source are removed when it is mounted with
    /// --cache-converted again, and least recently used entries are evicted
    /// past --cache-size. See docs/CACHE.md.
    Cache {
        #[command(subcommand)]
        action: CacheCmd,
    },
    /// Print the shell completion script for SHELL (bash, zsh, fish,
    /// elvish, powershell) to stdout.
    #[command(hide = true)]
    Completions { shell: clap_complete::Shell },
    /// Print the man page gyrofs(1) (roff) to stdout, or with COMMAND
    /// that command's, gyrofs-COMMAND(1), with all its options.
    #[command(hide = true)]
    Man {
        #[arg(value_parser = ["mount", "umount", "ls", "convert", "cache"])]
        command: Option<String>,
    },
}

#[derive(Subcommand)]
enum CacheCmd {
    /// List the cached files, least recently used first: source, path in
    /// the mount, bytes cached of the file's size, complete or partial, last
    /// use.
    Ls {
        /// The cache folder the mounts were given [default: as mount's].
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
    },
    /// Remove the cached files (all, or those of one source) that no
    /// running mount has open.
    Clear {
        /// Only this source's files (as given to mount: a path, or a URL).
        #[arg(long, value_name = "SOURCE")]
        source: Option<PathBuf>,
        /// The cache folder the mounts were given [default: as mount's].
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
    },
}

/// What `-o` lists and helper calls may name, from the parser's definition.
fn grammar() -> gyrofs::mount_options::Grammar {
    let cli = Cli::command();
    let mount = cli.find_subcommand("mount").expect("mount is a subcommand");
    gyrofs::mount_options::Grammar {
        subcommands: cli
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .collect(),
        mount_longs: mount
            .get_arguments()
            .filter_map(|a| Some((a.get_long()?.to_string(), a.get_action().takes_values())))
            .collect(),
    }
}

fn main() -> ExitCode {
    let mut argv = std::env::args_os();
    let program = argv.next().unwrap_or_default();
    let args: Vec<std::ffi::OsString> = argv.collect();
    let normalized = match gyrofs::mount_options::normalize(&program, &args, &grammar()) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("gyrofs: {e}");
            return ExitCode::FAILURE;
        }
    };
    for option in &normalized.ignored {
        eprintln!("gyrofs: warning: unknown mount option '{option}' ignored (-s)");
    }
    // A bad command line exits here with clap's message, `-f` or not.
    let cli = Cli::parse_from(std::iter::once("gyrofs".into()).chain(normalized.args.clone()));
    if normalized.fake {
        // mount(8)'s -f: the command line and every option's value are
        // checked (above), but nothing is read or mounted.
        return ExitCode::SUCCESS;
    }
    // A mount's log also shows the progress of long remote fetches.
    let filter = match cli.command {
        Cmd::Mount { .. } => "warn,gyrofs::remote=info",
        _ => "warn",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(filter))
        .format_timestamp_millis()
        .init();
    match run(cli, normalized.args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gyrofs: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Run the command; `argv` is its command line as parsed (for the mount
/// daemon).
fn run(cli: Cli, argv: Vec<std::ffi::OsString>) -> Result<(), Error> {
    match cli.command {
        Cmd::Mount {
            source,
            mountpoint,
            foreground,
            threads,
            allow_other,
            uid,
            gid,
            file_mode,
            dir_mode,
            log_file,
            read_ahead_kb,
            dtype,
            cache_converted,
            options,
            remote,
        } => {
            if let Some(list) = options.first() {
                return Err(
                    gyrofs::error::MountError::GroupedOptionList { list: list.clone() }.into(),
                );
            }
            let opts = MountOptions {
                argv,
                cache_converted,
                remote: remote.options(),
                // A remote source's reads wait on the network: more threads,
                // so that reads stuck on a slow object leave others free.
                threads: threads.unwrap_or_else(|| match gyrofs::remote::is_remote(&source) {
                    true => default_threads().max(32),
                    false => default_threads(),
                }),
                allow_other,
                foreground,
                log_file,
                read_ahead_kb,
                volume: Options {
                    dtypes: dtype.0,
                    access: gyrofs::access::Overrides {
                        uid,
                        gid,
                        file_mode,
                        dir_mode,
                    },
                },
            };
            gyrofs::mount::mount(&source, &mountpoint, &opts)
        }
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "gyrofs", &mut std::io::stdout());
            Ok(())
        }
        Cmd::Man { command } => {
            let mut cli = Cli::command();
            cli.build();
            let page = match command {
                None => cli,
                Some(name) => {
                    // The page's title (clap keeps names as static strings).
                    let title = match name.as_str() {
                        "mount" => "gyrofs-mount",
                        "umount" => "gyrofs-umount",
                        "ls" => "gyrofs-ls",
                        "cache" => "gyrofs-cache",
                        _ => "gyrofs-convert",
                    };
                    cli.find_subcommand(&name)
                        .expect("one of the listed commands")
                        .clone()
                        .name(title)
                }
            };
            match clap_mangen::Man::new(page).render(&mut std::io::stdout()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::io("stdout", e)),
                _ => Ok(()), // `gyrofs man | head` is no error
            }
        }
        Cmd::Umount { mountpoint, lazy } => Ok(gyrofs::mount::umount(&mountpoint, lazy)?),
        Cmd::Cache { action } => cache_command(action),
        Cmd::Ls {
            source,
            json,
            remote,
        } => {
            let located = gyrofs::remote::locate(&source, &remote.options())?;
            for w in &located.warnings {
                eprintln!("gyrofs: warning: {w}");
            }
            let (source, opener) = (located.path, located.opener);
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let printed = if json {
                // The manifest: every view's notes too.
                let volume = Volume::open_with(&source, &opener, &Options::default())?;
                gyrofs::ls::print_json(&volume, &mut out)
            } else {
                let catalog = gyrofs::source::open(&source, &opener)?;
                gyrofs::ls::print_with_gguf(&catalog, &mut out)
            };
            match printed.and_then(|()| std::io::Write::flush(&mut out)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                Err(e) => Err(Error::io("stdout", e)),
            }
        }
        Cmd::Convert {
            source,
            outdir,
            view,
            quiet,
            dtype,
            files_only,
            remote,
        } => {
            gyrofs::convert::check_out(&outdir)?;
            let located = gyrofs::remote::locate(&source, &remote.options())?;
            for w in &located.warnings {
                eprintln!("gyrofs: warning: {w}");
            }
            let first = gyrofs::view::hf::dtype_names(dtype.0[0]).map_or("bf16", |n| n.0);
            let view = view.unwrap_or_else(|| first.to_string());
            let options = Options {
                dtypes: dtype.0,
                ..Options::default()
            };
            let volume = Volume::open_with(&located.path, &located.opener, &options)?;
            for note in volume.notes() {
                eprintln!("gyrofs: warning: {note}");
            }
            let progress = !quiet && std::io::stderr().is_terminal();
            let s = gyrofs::convert::convert(&volume, &view, &outdir, !files_only, progress)?;
            if !quiet {
                eprintln!(
                    "wrote {} files, {} ({} bytes) to {} in {:.2?}",
                    s.files,
                    HumanBytes(s.bytes),
                    s.bytes,
                    outdir.display(),
                    s.elapsed
                );
            }
            Ok(())
        }
    }
}

/// `gyrofs cache ls|clear`.
fn cache_command(action: CacheCmd) -> Result<(), Error> {
    let dir_of = |d: Option<PathBuf>| -> Result<PathBuf, Error> {
        match d {
            Some(d) => Ok(d),
            None => gyrofs::remote::default_cache_dir()
                .map_err(|e| Error::io("cache directory", std::io::Error::other(e))),
        }
    };
    match action {
        CacheCmd::Ls { cache_dir } => {
            let dir = dir_of(cache_dir)?;
            let listed = gyrofs::converted_cache::list(&dir).map_err(|e| Error::io(&dir, e))?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let printed = gyrofs::converted_cache::print_list(&listed, &mut out)
                .and_then(|()| std::io::Write::flush(&mut out));
            match printed {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::io("stdout", e)),
                _ => Ok(()),
            }
        }
        CacheCmd::Clear { source, cache_dir } => {
            let dir = dir_of(cache_dir)?;
            let source = source.map(|s| gyrofs::converted_cache::source_label(&s));
            let c = gyrofs::converted_cache::clear(&dir, source.as_deref())
                .map_err(|e| Error::io(&dir, e))?;
            println!(
                "removed {} cached files ({}){}",
                c.removed,
                HumanBytes(c.bytes),
                match c.in_use {
                    0 => String::new(),
                    n => format!("; {n} kept: open by a running mount (unmount it first)"),
                }
            );
            Ok(())
        }
    }
}
