//! The benchmark, step by step (the crate's docs list the steps).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use forewarn_model::Precision;

use tch::{Device, Kind};
use tokio_util::sync::CancellationToken;

use crate::args::{BenchArgs, BenchKind};
use crate::load::{Generator, engine_config, ingest_config, preload};
use crate::measure::{forecaster_only, measure_bytes_per_device};
use crate::model::build;
use crate::pipeline::{latency_run, throughput_run};
use crate::roofline::{gemm_kind, measure_gemm};
use crate::setup::{ensure_broker, now_ms, repo_root, run_peer, say};

pub fn run(mut args: BenchArgs) -> anyhow::Result<()> {
    // The pipeline logs every alert; the spikes open hundreds. Keep the
    // bench's own report readable (RUST_LOG overrides).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,forewarn_telemetry=error,librdkafka=error")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let threads = match args.threads {
        0 => (std::thread::available_parallelism().map_or(1, usize::from) / 2).max(1),
        n => n,
    };
    forewarn_model::set_threads(threads);
    let device = forewarn_model::parse_device(&args.device)?;
    if let Some(g) = args.grid_shape().map_err(anyhow::Error::msg)? {
        // The convlstm's channels are its grid's cells (the generator, the
        // engine and the model all read `channels`).
        args.channels = g.rows * g.cols;
    }
    if args.devices == 0 || args.max_batch == 0 {
        bail!("--devices and --max-batch must be at least 1");
    }
    tch::manual_seed(7);
    let built = build(&args, device)?;
    let (spec, flops) = (built.shape, built.flops);
    say(format!(
        "model: random-init {} precision={} on {}; {:.0} FLOPs per reading ({} {:.0} + {} {:.0}{})",
        built.describe,
        args.precision,
        forewarn_model::describe_device(device),
        flops.total(),
        built.flops_parts[0],
        flops.lstm,
        built.flops_parts[1],
        flops.head,
        built.flops_parts[2]
    ));

    // 1. Roofline: the GEMM rate in the precision the LSTM runs in (the
    // shares below are against it); with bf16, the fp32 rate for reference.
    if args.precision == Precision::Bf16 {
        let fp32 = measure_gemm(device, Kind::Float, 1.5, built.gemm.0)?;
        say(format!(
            "roofline (reference only): GEMM {0}x{0}x{0} fp32 reaches {1:.1} GFLOP/s ({2:.1} per CPU-second); at \
             the model's shape {3:.1} GFLOP/s",
            fp32.size, fp32.peak, fp32.peak_cpu, fp32.small
        ));
    }
    let [gm, gk, gn] = built.gemm.0;
    let gemm = measure_gemm(device, gemm_kind(args.precision), 1.5, built.gemm.0)?;
    say(format!(
        "roofline: GEMM {}x{}x{} {} reaches {:.1} GFLOP/s on {threads} libtorch thread(s) ({:.1} per CPU-second of \
         the calling thread); at {} [{gm}x{gk}]x[{gk}x{gn}] {:.1} GFLOP/s",
        gemm.size,
        gemm.size,
        gemm.size,
        match args.precision {
            Precision::F32 => "fp32",
            Precision::Bf16 => "bf16",
        },
        gemm.peak,
        gemm.peak_cpu,
        built.gemm.1,
        gemm.small
    ));
    let sim = Generator::new(args.devices, args.channels, args.horizon);
    let engine_cfg = engine_config(&args, &sim, spec.state_len)?;

    // 2. Memory per device.
    let mem = measure_bytes_per_device(&engine_cfg, 50_000);
    say(format!(
        "memory: {:.0} bytes per device measured (RSS delta over {} warmed devices, id and map entry included); \
         {} computed by Engine::bytes_per_device",
        mem.measured, mem.devices, mem.computed
    ));

    // 3. Forecaster alone.
    let model = Arc::new(Mutex::new(built.network));
    let fb = args.forecaster_batch.unwrap_or(args.max_batch);
    let fo = forecaster_only(
        &model,
        &spec,
        device,
        fb,
        Duration::from_secs(args.forecaster_seconds),
    )?;
    // With one libtorch thread all forecaster work runs on the calling
    // thread, so CPU-time rates compare like with like even while other
    // processes preempt us; with more threads (or CUDA) only wall time does.
    let by_cpu = threads == 1 && device == Device::Cpu;
    let fo_share_wall = fo.readings_per_s * flops.total() / (gemm.peak * 1e9);
    let fo_share_cpu = fo.readings_per_cpu_s * flops.total() / (gemm.peak_cpu * 1e9);
    let fo_share = if by_cpu { fo_share_cpu } else { fo_share_wall };
    say(format!(
        "forecaster only: {} devices per call, {:.2} ms per call, {:.0} readings/s, {:.1} GFLOP/s = {:.0}% of the GEMM \
         roofline by wall time, {:.0}% by CPU time",
        fb,
        fo.secs_per_call * 1e3,
        fo.readings_per_s,
        fo.readings_per_s * flops.total() / 1e9,
        100.0 * fo_share_wall,
        100.0 * fo_share_cpu
    ));
    if args.forecaster_only {
        say("forecaster-only mode: no broker, no peer, no latency run".into());
        println!(
            "readings_per_s={:.0} peer_readings_per_s=0 ratio=0 roofline_share={:.2} p99_ms=0 bytes_per_device={:.0}",
            fo.readings_per_s, fo_share, mem.measured
        );
        return Ok(());
    }

    // 4. Preload.
    let root = repo_root();
    ensure_broker(&root, &args.brokers)?;
    std::fs::create_dir_all(&args.work_dir)
        .with_context(|| format!("creating {}", args.work_dir.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let run_id = now_ms();
    let ticks = args.readings.div_ceil(args.devices) as u64;
    let total = ticks * args.devices as u64;
    let tp = ingest_config(&args, &format!("forewarn.bench.{run_id}"));
    rt.block_on(forewarn_ingest::ensure_topics(
        &tp,
        &CancellationToken::new(),
    ))?;
    let t = Instant::now();
    let base_ts = 1_795_867_200_000;
    preload(&tp, &tp.input_topic, &sim, ticks, base_ts)?;
    let produce_s = t.elapsed().as_secs_f64();
    say(format!(
        "preload: {total} readings ({} devices x {ticks}) on {} ({} partitions) in {produce_s:.1} s ({:.0}/s)",
        args.devices,
        tp.input_topic,
        args.partitions,
        total as f64 / produce_s
    ));

    // 5. Throughput of the serve pipeline.
    let store = args.work_dir.join(format!("alerts-{run_id}.db"));
    let tput = throughput_run(
        &rt,
        tp.clone(),
        engine_cfg.clone(),
        model.clone(),
        &store,
        total,
    )?;
    let rate = total as f64 / tput.secs;
    let fflop = tput.forecaster_readings as f64 * flops.total();
    let share_wall = fflop / tput.forecaster_secs / (gemm.peak * 1e9);
    let share_cpu = fflop / tput.forecaster_cpu_secs.max(1e-9) / (gemm.peak_cpu * 1e9);
    let share = if by_cpu { share_cpu } else { share_wall };
    say(format!(
        "serve: {total} readings in {:.2} s = {rate:.0} readings/s end to end; {} alert changes stored; \
         committed offsets {}",
        tput.secs,
        tput.alert_changes,
        if tput.committed_ok {
            "= end offsets"
        } else {
            "BEHIND end offsets"
        }
    ));
    say(format!(
        "serve: forecaster {} calls, {:.0} devices per call, {:.2} s inside ({:.0}% of wall, {:.2} CPU-s), {:.1} GFLOP/s \
         = {:.0}% of the GEMM roofline by wall time, {:.0}% by CPU time; peak RSS {:.0} MiB",
        tput.calls,
        tput.forecaster_readings as f64 / args.horizon as f64 / tput.calls.max(1) as f64,
        tput.forecaster_secs,
        100.0 * tput.forecaster_secs / tput.secs,
        tput.forecaster_cpu_secs,
        fflop / tput.forecaster_secs / 1e9,
        100.0 * share_wall,
        100.0 * share_cpu,
        tput.peak_rss as f64 / (1 << 20) as f64
    ));
    say(format!(
        "serve: CPU seconds by thread during the run (wall {:.2} s): {}",
        tput.secs, tput.cpu
    ));

    // 6. The peer.
    let peer = if args.skip_peer {
        None
    } else if args.kind == BenchKind::Convlstm {
        say("peer: skipped, the Python peer runs the LSTM forecaster only".into());
        None
    } else {
        match run_peer(&root, &args, &tp.input_topic, run_id) {
            Ok(r) => Some(r),
            Err(e) => {
                say(format!("peer failed: {e:#}"));
                None
            }
        }
    };
    if let Some(p) = peer {
        say(format!(
            "peer: {p:.0} readings/s (Python, per-device loop); ratio {:.1}x",
            rate / p
        ));
    }

    // 7. Latency at half load.
    let lat = if args.skip_latency {
        None
    } else {
        let lp = ingest_config(&args, &format!("forewarn.bench.{run_id}.lat"));
        let store = args.work_dir.join(format!("alerts-{run_id}-lat.db"));
        let offered = args.latency_rate.unwrap_or(rate / 2.0);
        let r = latency_run(
            &rt,
            lp,
            engine_cfg,
            model.clone(),
            &store,
            &sim,
            offered,
            args.latency_linger_ms,
            args.latency_seconds,
        )?;
        say(format!(
            "latency at {:.0} readings/s offered ({:.0} achieved): reading -> alert visible on the alerts topic \
             (stored first), {} alert changes: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; the broker's floor \
             (reading -> readable by a plain consumer): p50 {:.1} ms, p99 {:.1} ms",
            offered, r.achieved_rate, r.samples, r.p50, r.p99, r.max, r.floor_p50, r.floor_p99
        ));
        say(format!(
            "latency by stage (mean ms from the alert's reading, forewarn_alert_delay_seconds): {}",
            r.stage_means
                .iter()
                .map(|(s, ms)| format!("{s} {ms:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        Some(r)
    };
    drop(rt);

    let peer_rate = peer.unwrap_or(0.0);
    let ratio = if peer_rate > 0.0 {
        rate / peer_rate
    } else {
        0.0
    };
    println!(
        "readings_per_s={rate:.0} peer_readings_per_s={peer_rate:.0} ratio={ratio:.1} roofline_share={share:.2} \
         p99_ms={:.1} bytes_per_device={:.0}",
        lat.map_or(0.0, |l| l.p99),
        mem.measured
    );
    Ok(())
}
