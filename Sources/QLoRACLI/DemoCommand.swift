import Foundation
import QLoRA

/// `qlora demo`: the whole story on a fresh machine in about a minute, nothing downloaded.
public enum DemoCommand: Command {
    public static let name = "demo"
    public static let summary = "Pretrain a small model, quantize it to NF4, fine-tune LoRA on it, report (no download)"
    public static let help = """
    Usage: qlora demo [--output DIR] [--pretrain-steps N] [--finetune-steps N] [--rank R] [--seed S]

    Builds a small Llama-style model (4 layers, hidden 128), pretrains all its weights in fp32 on a
    synthetic task ("+k d:" digit progressions), quantizes its linears to NF4 with double quantization,
    then fine-tunes LoRA adapters on a related task ("-k d:", counting down) with the base frozen in
    4 bits. Shows the losses, the trainable-parameter summary, memory per category, and answers before
    and after fine-tuning; writes the adapter (PEFT format) and report.json under the output directory.

    Options:
      --output DIR          where to write adapter/ and report.json (default: qlora-demo)
      --pretrain-steps N    full-precision pretraining steps (default 400)
      --finetune-steps N    LoRA steps on the NF4 base (default 150)
      --rank R              LoRA rank (default 8)
      --seed S              seed for every random choice (default 7)
    """

    public static func run(_ arguments: [String]) throws -> Int32 {
        let args = try Arguments(arguments, command: name,
                                 valueOptions: ["output", "pretrain-steps", "finetune-steps", "rank", "seed"], flagOptions: [])
        guard args.positionals.isEmpty else { throw CLIError.wrongPositionals(command: name, expected: [], got: args.positionals) }
        var options = DemoRun.Options(outputDirectory: URL(fileURLWithPath: args.string("output", default: "qlora-demo")))
        options.pretrainSteps = try args.int("pretrain-steps", default: options.pretrainSteps)
        options.finetuneSteps = try args.int("finetune-steps", default: options.finetuneSteps)
        options.rank = try args.int("rank", default: options.rank)
        options.seed = UInt64(try args.int("seed", default: Int(options.seed)))
        guard options.pretrainSteps > 0, options.finetuneSteps > 0, options.rank > 0 else {
            throw CLIError.badValue(command: name, option: "pretrain-steps/finetune-steps/rank", value: "0", expected: "positive integers")
        }
        let blas = try OpenBLAS.ensureLoaded()
        print("qlora demo — \(blas.summary)\n")
        _ = try DemoRun(options: options).run { event in render(event, options: options) }
        return 0
    }

    static func render(_ event: DemoRun.Event, options: DemoRun.Options) {
        switch event {
        case .phase(let text):
            print("▶ \(text)")
        case .pretrainStep(let report):
            Formatting.reportProgress(report, label: "  pretrain", every: max(1, options.pretrainSteps / 8))
        case .pretrained(let first, let last, let plus, let minus, let seconds):
            print(String(format: "  loss %.3f → %.3f in %.1f s; greedy accuracy: \"+\" %.0f%%, \"-\" %.0f%% (never seen)\n",
                         first, last, seconds, plus * 100, minus * 100))
        case .quantized(let before, let after, let bits, let parameters, let seconds):
            print("  \(Formatting.count(parameters)) linear weights: \(Formatting.bytes(before)) fp32 → \(Formatting.bytes(after)) NF4 "
                  + String(format: "(%.3f bits/param resident) in %.2f s\n", bits, seconds))
        case .trainableSummary(let line):
            print("  \(line)")
        case .finetuneStart(let planned, let measured):
            print("  memory of the fine-tune, planned from the config alone / held by the buffers:")
            for category in MemoryCategory.allCases where planned[category] > 0 || measured[category] > 0 {
                print("    \(category.rawValue.padding(toLength: 22, withPad: " ", startingAt: 0)) \(MemoryReport.humanBytes(planned[category]).padding(toLength: 12, withPad: " ", startingAt: 0)) \(category == .runtimeOverhead ? "(measured at the end)" : MemoryReport.humanBytes(measured[category]))")
            }
        case .memoryCheck(let planned, _, let peak):
            print(String(format: "  peak RSS %@ vs planned total %@ (%+.1f %%; the peak was reset after pretraining)",
                         MemoryReport.humanBytes(peak), MemoryReport.humanBytes(planned.total), 100 * Double(peak - planned.total) / Double(planned.total)))
        case .finetuneStep(let report):
            Formatting.reportProgress(report, label: "  lora", every: max(1, options.finetuneSteps / 6))
        case .samples(let samples):
            print("\n  prompt      expected   base (NF4)   base + LoRA")
            for s in samples {
                print("  \(s.prompt.padding(toLength: 10, withPad: " ", startingAt: 0))  \(s.expected)     \(s.before.padding(toLength: 10, withPad: " ", startingAt: 0))   \(s.after)\(s.after == s.expected ? "  ✓" : "")")
            }
        case .finished(let r):
            print(String(format: "\n  \"-\" accuracy: %.0f%% before → %.0f%% after fine-tuning; loss %.3f → %.3f",
                         r.accuracyMinusBefore * 100, r.accuracyMinusAfter * 100, r.finetuneLoss.first, r.finetuneLoss.last))
            print("  peak RSS \(Formatting.bytes(r.peakResidentBytes)); total \(String(format: "%.1f", r.seconds)) s")
            print("  wrote \(r.adapterDirectory.path) (PEFT adapter) and \(r.reportFile.path)")
        }
    }
}
