import Foundation
import Testing
@testable import QLoRA

/// The trainer's gradient of an accumulated step is exactly G0 + G1 + ...: each micro-batch's gradient
/// computed alone (from zero, scaled by 1 / all targets) and then added. That is the sum an MPI
/// allreduce forms across ranks, so `mpirun -np 2` equals `--grad-accum 2` bit for bit
/// (DistributedTrainingTests); accumulating in place would interleave the additions differently.
@Suite struct GradientAccumulationSumTests {
    @Test func anAccumulatedStepIsTheSumOfItsMicroBatchGradients() throws {
        let model = try LlamaLoader.load(directory: FixturePaths.url("tiny-llama/untied-fp32"), format: .dense32, precision: .fp32)
        let (ids, labels) = try TrainingInvariantsTests.batch()
        // lm_head trained in full with logits chunks of 4 rows: its gradient gets three additions per micro-batch.
        let config = LoRAConfig(r: 4, loraAlpha: 6, targetModules: ["all-linear"], modulesToSave: ["lm_head"])
        func setUp() throws -> (LoRAAdapters, LlamaExecutor) {
            let adapters = try LoRAAdapters(modelConfig: model.config, config: config)
            adapters.initialize(seed: 5)
            adapters.initializeModulesToSave(from: model)
            // B = 0 after PEFT's init would leave A's gradient zero: give B values.
            var generator = SeededGenerator(seed: 6)
            for entry in adapters.parameters.entries where entry.key.hasSuffix("lora_B.weight") {
                adapters.parameters.setValues(entry, (0..<entry.count).map { _ in generator.normal() * 0.05 })
            }
            return (adapters, LlamaExecutor(model: model, lora: adapters, shape: .init(batch: 1, seqLen: 12, logitsChunkRows: 4)))
        }
        struct Rows: BatchSource {
            let ids: [Int32], labels: [Int32]
            func batch(step: Int, micro: Int) -> TokenBatch {
                let rows = (12 * micro)..<(12 * micro + 12)
                return TokenBatch(inputIDs: Array(ids[rows]), labels: Array(labels[rows]), batch: 1, seqLen: 12)
            }
        }
        let source = Rows(ids: ids, labels: labels)
        let targets = source.batch(step: 0, micro: 0).targetCount + source.batch(step: 0, micro: 1).targetCount
        let scale = 1 / Float(targets)

        // By hand: each micro-batch from zero, then G0 + G1.
        let (alone, executor) = try setUp()
        var terms: [[Float]] = []
        for micro in 0..<2 {
            alone.parameters.zeroGradients()
            let batch = source.batch(step: 0, micro: micro)
            _ = try executor.lossAndGradients(inputIDs: batch.inputIDs, labels: batch.labels, batch: 1, seqLen: 12, gradScale: scale)
            terms.append(Array(UnsafeBufferPointer(start: alone.parameters.gradients, count: alone.parameters.count)))
        }
        let expected = zip(terms[0], terms[1]).map { $0 + $1 }

        let (trained, trainerExecutor) = try setUp()
        var options = TrainerOptions()
        options.gradientAccumulationSteps = 2
        options.maxGradNorm = nil
        options.learningRate = 0   // look at the gradients only
        let trainer = Trainer(executor: trainerExecutor, parameters: trained.parameters, options: options)
        _ = try trainer.trainStep(source)
        let got = Array(UnsafeBufferPointer(start: trained.parameters.gradients, count: trained.parameters.count))
        #expect(got.count == expected.count)
        let differing = zip(got, expected).filter { $0.0.bitPattern != $0.1.bitPattern }.count
        #expect(differing == 0, "\(differing) of \(got.count) accumulated gradients are not G0 + G1 bit for bit")
        #expect(got.contains { $0 != 0 })
        // Only the accumulation buffer is added to what the trainer holds.
        #expect(trainer.accumulationBytes == trained.parameters.sectionBytes)
        #expect(trainer.liveMemory()[.gradients] == 2 * trained.parameters.sectionBytes)
    }
}

/// The check that every rank holds rank 0's parameters, with a stand-in group (one rank of two):
/// rank 0's fingerprint arrives by broadcast, and the verdict is summed over the ranks.
@Suite struct RankAgreementTests {
    final class OtherRank: DataParallelGroup {
        let rank = 1, size = 2
        /// What rank 0 broadcasts: nil = the same bytes this rank has.
        var rankZeroBytes: [UInt8]?
        func sumInPlace(_ values: UnsafeMutablePointer<Float>, count: Int) throws {}
        func sumInPlace(_ values: UnsafeMutablePointer<Double>, count: Int) throws {}
        func broadcast(_ bytes: UnsafeMutableRawPointer, count: Int, root: Int) throws {
            if let rankZeroBytes { bytes.copyMemory(from: rankZeroBytes, byteCount: count) }
        }
    }

    @Test func identicalParametersPassAndDifferentOnesAreReported() throws {
        let parameters = TrainableParameters(tensors: [("a", [3, 5]), ("b", [7])])
        for i in 0..<parameters.count { parameters.parameters[i] = Float(i) * 0.25 }
        let group = OtherRank()
        try group.checkIdentical(parameters, step: 4)
        // Rank 0 differs in one bit of one value: its fingerprint differs.
        let rankZero = TrainableParameters(tensors: [("a", [3, 5]), ("b", [7])])
        for i in 0..<rankZero.count { rankZero.parameters[i] = parameters.parameters[i] }
        rankZero.parameters[9] = Float(bitPattern: rankZero.parameters[9].bitPattern ^ 1)
        var fingerprint = OtherRank.fingerprint(rankZero)
        group.rankZeroBytes = withUnsafeBytes(of: &fingerprint) { Array($0) }
        #expect(throws: TrainError.ranksDiverged(step: 4, ranks: 1)) { try group.checkIdentical(parameters, step: 4) }
    }
}
