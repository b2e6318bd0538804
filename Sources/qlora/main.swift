import Foundation
import QLoRACLI

exit(CLI.main(CommandLine.arguments))
