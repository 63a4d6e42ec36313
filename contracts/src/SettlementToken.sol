// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title SettlementToken
/// @notice A plain 6-decimal ERC-20 standing in for a bank-settled deposit token, for the embedded
///         chain and tests. In production the settlement contract is pointed at the real token.
contract SettlementToken is ERC20, ERC20Permit, Ownable {
    constructor(address issuer) ERC20("Alliance Settlement Dollar", "ASD") ERC20Permit("Alliance Settlement Dollar") Ownable(issuer) {}

    function decimals() public pure override returns (uint8) {
        return 6;
    }

    /// @notice The issuer (the bank in production) creates deposit tokens.
    function mint(address to, uint256 amount) external onlyOwner {
        _mint(to, amount);
    }
}
